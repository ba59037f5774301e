"""The Python API (`mgimm_core.describe`): the CLI's path, GeoDataFrames in and out."""

from __future__ import annotations

import json

import geopandas
import pyogrio
import pytest
import shapely

import mgimm_core
from mgimm_core.errors import OptionsError
from training.synthetic.demo_inputs import write_demo_inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_demo_inputs(tmp_path_factory.mktemp("api_inputs"), seed=11, size=256, objects=4)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = mgimm_core.load_model(tiny_model_dir, max_new_tokens=3, threads=1)
    yield engine
    engine.close()


def test_describe_a_path_gives_the_rows_the_cli_writes(tmp_path, inputs, engine):
    from click.testing import CliRunner

    from batch.cli import cli

    frame = mgimm_core.describe(inputs.scene, inputs.aoi, model=engine)
    out = tmp_path / "cli.gpkg"
    result = CliRunner().invoke(cli, ["describe", str(inputs.scene), "--aoi", str(inputs.aoi), "-o", str(out),
                                      "--model", str(engine.model.path), "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output
    cli_rows = pyogrio.read_dataframe(out, layer="regions").set_index("region_id")
    assert isinstance(frame, geopandas.GeoDataFrame) and len(frame) == inputs.objects + 1
    assert frame.crs.to_epsg() == 4326                     # the AOI's CRS
    for _, row in frame.iterrows():                        # same words and placement as the CLI
        assert row["description"] == cli_rows.loc[row["region_id"], "description"]
        assert row["gsd_m"] == pytest.approx(cli_rows.loc[row["region_id"], "gsd_m"])
    assert frame.attrs["summary"]["described"] == inputs.objects + 1


def test_describe_a_geodataframe_in_another_crs_keeps_its_attributes(inputs, engine):
    aois = geopandas.read_file(inputs.aoi).to_crs("EPSG:3857")
    aois["note"] = [f"n{i}" for i in range(len(aois))]
    frame = mgimm_core.describe([inputs.scene], aois, model=engine)
    assert frame.crs.to_epsg() == 3857 and list(frame["note"]) == list(aois["note"])
    assert frame["error"].isna().all()


def test_shapely_geometries_need_a_crs(inputs, engine):
    geometry = shapely.box(*geopandas.read_file(inputs.aoi).total_bounds)
    with pytest.raises(OptionsError, match="crs="):
        mgimm_core.describe(inputs.scene, [geometry], model=engine)
    frame = mgimm_core.describe(inputs.scene, geometry, crs="EPSG:4326", model=engine)
    assert len(frame) == 1 and frame.loc[0, "description"] is not None


def test_tiles_mode_and_a_kept_output(tmp_path, inputs, engine):
    out = tmp_path / "tiles.gpkg"
    frame = mgimm_core.describe(inputs.scene, tiles=True, tile_size=128, output=out, model=engine)
    assert len(frame) == 4 and out.exists()
    assert set(frame.columns) >= {"tile_index", "row", "col", "description", "geometry"}
    again = mgimm_core.describe(inputs.scene, tiles=True, tile_size=128, output=out, mode="resume", model=engine)
    assert again.attrs["summary"]["described"] == 0 and len(again) == 4
    with pytest.raises(OptionsError):
        mgimm_core.describe(inputs.scene, inputs.aoi, tiles=True, model=engine)
    json.dumps(frame.attrs["summary"])                    # plain JSON, like the CLI's summary
