"""The model card's warnings (mgimm_core/model_card.py), judged on real files through
`jobs.scene_warnings`, the function every describe run calls."""

from __future__ import annotations

from mgimm_core.jobs import scene_warnings
from mgimm_core.model_dir import ModelDirectory
from mgimm_core.scene import Scene
from training.synthetic.demo_inputs import write_demo_inputs


def test_a_synthetic_only_model_warns_on_real_scenes_not_on_generated_ones(tmp_path, make_raster):
    generated = write_demo_inputs(tmp_path / "demo").scene          # tagged by training/synthetic/export.py
    real = make_raster("real.tif")                                  # any other GeoTIFF
    card = {"synthetic_only": True, "gsd_m": [0.3, 30.0]}
    with Scene.open(str(generated)) as synthetic, Scene.open(real) as other:
        assert scene_warnings([synthetic], card) == []
        (line,) = scene_warnings([other], card)
        assert line.startswith(f"{real}: the model was trained on synthetic scenes only")
        assert "often wrong" in line and "docs/demo_v3.md" in line
        assert scene_warnings([other], {"gsd_m": [0.3, 30.0]}) == []      # a card that claims no such thing
    assert ModelDirectory.resolve().card["synthetic_only"] is True        # the shipped demo model says so


def test_the_warning_comes_once_the_output_is_open(tmp_path, make_raster, monkeypatch, caplog):
    """A run refused for its output (it exists, no --overwrite) says only why; a run that writes
    warns (mgimm_core/pipeline.py describe_to_output logs the scenes' warnings after opening)."""
    import logging

    import pytest

    import mgimm_core
    from mgimm_core.errors import OutputError

    monkeypatch.setattr(ModelDirectory, "card", property(lambda self: {"synthetic_only": True}))
    real = make_raster("real.tif")
    out = tmp_path / "out.gpkg"
    out.write_bytes(b"")
    engine = mgimm_core.load_model(None, max_new_tokens=2, threads=1)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(OutputError):
            mgimm_core.describe(real, "bbox:500100,4499700,500300,4499900", crs="EPSG:32633", model=engine,
                                output=out)
        assert "synthetic scenes only" not in caplog.text
        mgimm_core.describe(real, "bbox:500100,4499700,500300,4499900", crs="EPSG:32633", model=engine,
                            output=out, mode="overwrite")
        assert "synthetic scenes only" in caplog.text
    finally:
        engine.close()


def test_the_stretch_warnings_are_the_runs(tmp_path, make_raster):
    """Unmarked 0 fill (mgimm_core/scene.py) reaches the run's warnings, so `runs` and the summary keep
    it, not only stderr (found by a user's re-check)."""
    import json
    import sqlite3

    import numpy as np

    import mgimm_core

    data = np.arange(3 * 48 * 64, dtype="uint16").reshape(3, 48, 64) + 100
    data[:, :, :16] = 0
    scene = make_raster("fill.tif", dtype="uint16", data=data)
    with Scene.open(scene) as opened:
        assert any("are 0 in every band" in line for line in scene_warnings([opened], {}))
    out = tmp_path / "o.gpkg"
    engine = mgimm_core.load_model(None, max_new_tokens=2, threads=1)
    try:
        frame = mgimm_core.describe(scene, "bbox:500100,4499700,500300,4499900", crs="EPSG:32633", model=engine,
                                    output=out)
    finally:
        engine.close()
    assert any("--nodata 0" in line for line in frame.attrs["summary"]["warnings"])
    with sqlite3.connect(out) as db:
        (parameters,) = db.execute("SELECT parameters FROM runs").fetchone()
    assert any("--nodata 0" in line for line in json.loads(parameters)["warnings"])
