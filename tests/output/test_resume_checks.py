"""What --resume and --append say about rows already in an output (mgimm_core/pipeline.py
`check_same_tile_grid`, `warn_of_appended_keys`, and `already_done` counted over this run's rows)."""

from __future__ import annotations

import hashlib

import pytest

import mgimm_core
from mgimm_core.errors import OptionsError
from tests.output.conftest import regions


def test_a_tiles_resume_on_another_grid_is_refused_before_anything_is_written(tmp_path, inputs, engine):
    out = tmp_path / "t.gpkg"
    mgimm_core.describe(inputs.scene, tiles=True, tile_size=128, model=engine, output=out)
    before = hashlib.md5(out.read_bytes()).hexdigest()
    with pytest.raises(OptionsError, match=r"cut at 128 px, overlap 0; this run asks for 64 px") as caught:
        mgimm_core.describe(inputs.scene, tiles=True, tile_size=64, model=engine, output=out, mode="resume")
    assert caught.value.option == "tile_size" and hashlib.md5(out.read_bytes()).hexdigest() == before
    assert "Resume with --tile-size 128 --tile-overlap 0" in str(caught.value)
    with pytest.raises(OptionsError, match="overlap 0; this run asks for 128 px, overlap 8") as caught:
        mgimm_core.describe(inputs.scene, tiles=True, tile_size=128, tile_overlap=8, model=engine, output=out,
                            mode="resume")
    assert caught.value.option == "tile_overlap"
    again = mgimm_core.describe(inputs.scene, tiles=True, tile_size=128, model=engine, output=out, mode="resume")
    assert again.attrs["summary"]["already_done"] == 4 and again.attrs["summary"]["described"] == 0


def test_already_done_counts_this_runs_regions_only(tmp_path, inputs, engine):
    aoi = regions(inputs.scene)
    out = tmp_path / "o.gpkg"
    mgimm_core.describe(inputs.scene, aoi, model=engine, output=out)            # 6 described, 1 outside
    frame = mgimm_core.describe(inputs.scene, aoi.iloc[:3], model=engine, output=out, mode="resume")
    assert frame.attrs["summary"]["already_done"] == 3                         # not the layer's 6


def test_appending_regions_the_layer_holds_warns(tmp_path, inputs, engine, caplog):
    aoi = regions(inputs.scene)
    out = tmp_path / "o.gpkg"
    mgimm_core.describe(inputs.scene, aoi.iloc[:2], model=engine, output=out)
    mgimm_core.describe(inputs.scene, aoi.iloc[4:6], model=engine, output=out, mode="append")
    assert "already" not in caplog.text                                        # other regions: nothing to say
    mgimm_core.describe(inputs.scene, aoi.iloc[:3], model=engine, output=out, mode="append")
    assert "2 region(s) of this run are in" in caplog.text and "to another output" in caplog.text


def test_resuming_an_output_that_does_not_exist_says_it_starts_a_new_one(tmp_path, inputs, engine, caplog):
    out = tmp_path / "typo.gpkg"
    mgimm_core.describe(inputs.scene, regions(inputs.scene).iloc[:1], model=engine, output=out, mode="resume")
    assert out.exists() and "does not exist yet, so this is a new output" in caplog.text
