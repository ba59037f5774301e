"""Bad and hostile inputs to `mgimm-geo describe` and the request service: each gets a per-row error
with its code, or one clear message and a non-zero exit, and nothing written is lost. Real GeoTIFFs,
real GeoJSON/GeoPackage files read back with pyogrio, the tiny random MGIMM."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
from click.testing import CliRunner

from batch.cli import cli

UTM = "EPSG:32633"
X0, Y0 = 500000.0, 4_500_000.0         # make_raster's default origin: 10 m pixels, 64 x 48


def square(x, y, side=100.0) -> list:
    """A closed ring (UTM metres) of a square with its lower-left corner at scene pixel offsets."""
    return [[X0 + x, Y0 - y - side], [X0 + x + side, Y0 - y - side], [X0 + x + side, Y0 - y],
            [X0 + x, Y0 - y], [X0 + x, Y0 - y - side]]


def write_aoi(path, features: list[tuple[dict, dict]]) -> str:
    """A GeoJSON file of (properties, geometry) in EPSG:32633 (given to describe as --aoi-crs)."""
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": props, "geometry": geom} for props, geom in features]}))
    return str(path)


def polygon(x, y, side=100.0) -> dict:
    return {"type": "Polygon", "coordinates": [square(x, y, side)]}


def describe(args, model, catch=True):
    base = ["describe", *args, "--model", model, "--max-new-tokens", "2", "--aoi-crs", UTM, "-q"]
    return CliRunner().invoke(cli, base, catch_exceptions=catch)


def rows_of(path) -> list[dict]:
    meta, _fids, geoms, values = pyogrio.raw.read(str(path), layer="regions")
    rows = [dict(zip(meta["fields"], row)) for row in zip(*values)]
    for row, geom in zip(rows, geoms):
        row["_geometry"] = geom
    return rows


# ================================================================== AOI ids, scene names, geometries
def test_duplicate_aoi_ids_are_refused_before_anything_is_written(tmp_path, tiny_model_dir, make_raster):
    scene = make_raster()
    aoi = write_aoi(tmp_path / "aoi.geojson", [({"id": "AB"[i % 2]}, polygon(20 + 20 * i, 20)) for i in range(8)])
    out = tmp_path / "out.gpkg"
    for mode in ([], ["--resume"]):
        result = describe([scene, "--aoi", aoi, "-o", str(out), *mode], tiny_model_dir)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "4 features share the id 'A'" in result.output and "unique 'id'" in result.output
        assert not out.exists()


def test_resume_with_the_scene_named_another_way_skips_what_is_done(tmp_path, tiny_model_dir, make_raster,
                                                                      monkeypatch):
    make_raster("rgb.tif")
    monkeypatch.chdir(tmp_path)
    aoi = write_aoi(tmp_path / "aoi.geojson", [({"id": f"r{i}"}, polygon(20 + 40 * i, 20)) for i in range(4)])
    assert describe(["rgb.tif", "--aoi", aoi, "-o", "out.gpkg"], tiny_model_dir).exit_code == 0
    result = describe(["./sub/../rgb.tif", "--aoi", aoi, "-o", "out.gpkg", "--resume"], tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["already_done"] == 4
    rows = rows_of(tmp_path / "out.gpkg")
    assert len(rows) == 4 and {r["scene"] for r in rows} == {str(tmp_path / "rgb.tif")}


def test_points_lines_and_nan_coordinates_are_error_rows_and_the_run_goes_on(tmp_path, tiny_model_dir,
                                                                             make_raster):
    scene = make_raster()
    features = [({"id": f"p{i}"}, polygon(20 + 40 * i, 20)) for i in range(5)]
    features[2] = ({"id": "pt"}, {"type": "Point", "coordinates": [X0 + 50, Y0 - 50]})
    features[3] = ({"id": "ln"}, {"type": "LineString", "coordinates": [[X0 + 50, Y0 - 50], [X0 + 90, Y0 - 90]]})
    nan_ring = square(0, 0)
    nan_ring[1][0] = float("nan")       # Python's json writes NaN, and GDAL reads it
    features.append(({"id": "nan"}, {"type": "Polygon", "coordinates": [nan_ring]}))
    aoi = write_aoi(tmp_path / "aoi.geojson", features)
    out = tmp_path / "out.gpkg"
    for mode in ([], ["--resume"]):
        result = describe([scene, "--aoi", aoi, "-o", str(out), *mode], tiny_model_dir)
        assert result.exit_code == 3, result.output
        assert "Traceback" not in result.output
        rows = {r["region_id"]: r for r in rows_of(out)}
        assert sorted(rows) == ["ln", "nan", "p0", "p1", "p4", "pt"]
        for bad in ("pt", "ln", "nan"):
            assert rows[bad]["error_code"] == "region_geometry" and rows[bad]["_geometry"] is None
            assert rows[bad]["description"] is None
        assert "not finite" in rows["nan"]["error"]
        assert all(rows[good]["error"] is None for good in ("p0", "p1", "p4"))


def test_an_all_nodata_region_is_an_error_row_without_a_description(tmp_path, tiny_model_dir, make_raster):
    data = np.full((3, 48, 64), 40, np.uint8)
    data[:, :, 32:] = 0                              # the east half is nodata
    scene = make_raster(data=data, nodata=0)
    aoi = write_aoi(tmp_path / "aoi.geojson", [({"id": "data"}, polygon(20, 20)), ({"id": "empty"}, polygon(400, 20))])
    out = tmp_path / "out.gpkg"
    result = describe([scene, "--aoi", aoi, "-o", str(out)], tiny_model_dir)
    assert result.exit_code == 3, result.output
    rows = {r["region_id"]: r for r in rows_of(out)}
    assert rows["empty"]["error_code"] == "region_nodata" and rows["empty"]["description"] is None
    assert rows["empty"]["valid_fraction"] == 0.0 and rows["empty"]["_geometry"] is not None
    assert rows["data"]["error"] is None and rows["data"]["description"] is not None
