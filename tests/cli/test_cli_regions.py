"""`mgimm-geo regions`: JSON per region on stdout, per-region errors, whole-input errors exit 1."""

from __future__ import annotations

import json

import pyproj
import shapely
from click.testing import CliRunner

from batch.cli import cli


def run(*args):
    return CliRunner().invoke(cli, ["regions", *args])


def lonlat_box(scene_crs, transform, c0, r0, c1, r1) -> shapely.Polygon:
    """A scene-pixel rectangle as a lon/lat polygon (densified, so its edges stay on the pixels)."""
    (x0, y0), (x1, y1) = transform @ (c0, r0), transform @ (c1, r1)
    poly = shapely.segmentize(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)),
                              abs(transform.a) / 4)
    tr = pyproj.Transformer.from_crs(scene_crs, "EPSG:4326", always_xy=True)
    return shapely.transform(poly, lambda x, y: tr.transform(x, y), interleaved=False)


def geojson(path, named_geometries: dict) -> str:
    features = [{"type": "Feature", "properties": {"id": name},
                 "geometry": shapely.geometry.mapping(g)} for name, g in named_geometries.items()]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return str(path)


def assert_clean_failure(result, *needles):
    assert result.exit_code == 1, result.output
    assert result.stdout == ""                       # no partial output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    for needle in needles:
        assert needle in result.stderr, result.stderr


def scene_and_transform(make_raster):
    from rasterio.transform import from_origin
    return make_raster(width=64, height=48), from_origin(500_000.0, 4_500_000.0, 10.0, 10.0)


def test_json_report_lists_each_region_and_its_error(make_raster, tmp_path):
    scene, t = scene_and_transform(make_raster)
    aoi = geojson(tmp_path / "aoi.geojson", {
        "field": lonlat_box("EPSG:32633", t, 10, 8, 20, 14),
        "far": lonlat_box("EPSG:32633", t, 500, 8, 520, 14),
        "edge": lonlat_box("EPSG:32633", t, 54, 8, 74, 14)})
    model = tmp_path / "model"           # chip settings only: `regions` reads no weights
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "mgimm_processor.json").write_text(json.dumps({"image_size": 336, "chip_min_window": 16}))
    result = run(scene, "--aoi", aoi, "--json", "--model", str(model))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["ok"], report["failed"], report["crs"]) == (2, 1, "EPSG:32633")
    field, far, edge = report["regions"]
    assert field["id"] == "field" and field["status"] == "ok"
    assert field["mask_pixels"] == 60 and field["valid_fraction"] == 1.0
    assert field["out_shape"] == [16, 16] and field["window"]["width"] == 16
    w = field["window"]
    assert field["box"] == [10 - w["col_off"], 8 - w["row_off"], 20 - w["col_off"],
                            14 - w["row_off"]]
    assert abs(field["gsd_m"] - 10.0) < 0.01
    assert report["chip"] == {"input_size": 336, "context": 0.25, "min_window": 16}
    assert far["status"] == "error" and far["error_code"] == "region_outside"
    assert "outside the scene" in far["error"] and far["id"] == "far"
    assert edge["valid_fraction"] == 0.5
    assert "outside the scene" in result.stderr          # the warning, on stderr


def test_table_output_without_json(make_raster, tmp_path):
    scene, t = scene_and_transform(make_raster)
    aoi = geojson(tmp_path / "aoi.geojson", {"field": lonlat_box("EPSG:32633", t, 10, 8, 20, 14)})
    result = run(scene, "--aoi", aoi)
    assert result.exit_code == 0, result.output
    assert "1 region(s) ok, 0 failed" in result.stdout and "field" in result.stdout


def test_every_region_failing_exits_1_without_output(make_raster, tmp_path):
    scene, t = scene_and_transform(make_raster)
    aoi = geojson(tmp_path / "aoi.geojson", {"far": lonlat_box("EPSG:32633", t, 500, 8, 520, 14)})
    assert_clean_failure(run(scene, "--aoi", aoi, "--json"), "region 'far'",
                         "outside the scene", "none of the 1 region(s)")


def test_point_needs_buffer_then_works(make_raster):
    scene, _ = scene_and_transform(make_raster)
    point = "SRID=32633;POINT (500105 4499895)"
    assert_clean_failure(run(scene, "--aoi", point, "--json"), "a Point", "--buffer")
    result = run(scene, "--aoi", point, "--buffer", "15", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["regions"][0]["mask_pixels"] == 9


def test_empty_geometry_fails(make_raster, tmp_path):
    scene, _ = scene_and_transform(make_raster)
    path = tmp_path / "empty.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": None}]}))
    assert_clean_failure(run(scene, "--aoi", str(path), "--json"), "region '0'", "empty geometry")


def test_missing_aoi_file(make_raster, tmp_path):
    scene, _ = scene_and_transform(make_raster)
    assert_clean_failure(run(scene, "--aoi", str(tmp_path / "nope.gpkg"), "--json"),
                         "nope.gpkg", "no such file")


def test_unreadable_aoi_file(make_raster, tmp_path):
    scene, _ = scene_and_transform(make_raster)
    bad = tmp_path / "bad.gpkg"
    bad.write_bytes(b"SQLite format 3\x00 but truncated")
    assert_clean_failure(run(scene, "--aoi", str(bad), "--json"), "bad.gpkg", "cannot be read")


def test_aoi_without_crs_needs_aoi_crs(make_raster, tmp_path):
    import numpy as np
    import pyogrio.raw
    import warnings
    scene, _ = scene_and_transform(make_raster)
    shp = tmp_path / "parcels.shp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pyogrio.raw.write(str(shp), np.array([shapely.to_wkb(shapely.box(500_100, 4_499_800,
                                                                          500_200, 4_499_900))],
                                             dtype=object),
                          [np.array([1])], ["id"], geometry_type="Polygon", crs=None)
    assert_clean_failure(run(scene, "--aoi", str(shp), "--json"), "parcels.shp", "--aoi-crs")
    result = run(scene, "--aoi", str(shp), "--aoi-crs", "EPSG:32633", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["regions"][0]["mask_pixels"] == 100


def test_unknown_aoi_crs(make_raster):
    scene, _ = scene_and_transform(make_raster)
    assert_clean_failure(run(scene, "--aoi", "bbox:0,0,1,1", "--aoi-crs", "EPSG:999999"),
                         "EPSG:999999", "EPSG:xxxx")


def test_raster_without_crs_and_lonlat_aoi(make_raster):
    scene = make_raster(crs=None)
    assert_clean_failure(run(scene, "--aoi", "bbox:13,52,13.1,52.1", "--json"),
                         "has no CRS", "gdal_edit.py -a_srs")


def test_missing_scene(tmp_path):
    assert_clean_failure(run(str(tmp_path / "none.tif"), "--aoi", "bbox:13,52,13.1,52.1"),
                         "none.tif", "no such file")


def test_gpkg_layer_choice(make_raster, tmp_path):
    import numpy as np
    import pyogrio.raw
    scene, t = scene_and_transform(make_raster)
    path = tmp_path / "two.gpkg"
    for name, box in (("a", (10, 8, 20, 14)), ("b", (30, 8, 40, 14))):
        wkb = np.array([shapely.to_wkb(lonlat_box("EPSG:32633", t, *box))], dtype=object)
        pyogrio.raw.write(str(path), wkb, [np.array([name], dtype=object)], ["name"], layer=name,
                          geometry_type="Polygon", crs="EPSG:4326", append=path.exists())
    assert_clean_failure(run(scene, "--aoi", str(path)), "2 layers with geometry (a, b)", "--layer")
    result = run(scene, "--aoi", str(path), "--layer", "b", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["regions"][0]["mask_pixels"] == 60


def test_landsat_sample(landsat_path, tmp_path):
    from mgimm_core.scene import Scene
    with Scene.open(landsat_path, bands=(3, 2, 1)) as scene:
        t, crs = scene.transform, scene.crs.to_wkt()
    aoi = geojson(tmp_path / "recife.geojson", {"harbour": lonlat_box(crs, t, 200, 150, 260, 190)})
    result = run(landsat_path, "-b", "3,2,1", "--aoi", aoi, "--json")
    assert result.exit_code == 0, result.output
    [region] = json.loads(result.stdout)["regions"]
    assert region["mask_pixels"] == 60 * 40 and region["out_shape"] == [90, 90]
    assert abs(region["gsd_m"] - 28.5) < 0.3
