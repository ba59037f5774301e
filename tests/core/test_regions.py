"""Regions: AOI sources -> exactly the scene pixels, mask, box and valid fraction the model sees.

The exactness tests draw a polygon along pixel edges of a generated scene (so every pixel centre
is half a pixel away from any edge), write it in another CRS, and check that the mask selects
exactly the expected pixels: a set built cell by cell, independently of the code under test.
"""

from __future__ import annotations

import json
import logging
import math
import warnings

import numpy as np
import pyogrio.raw
import pyproj
import pytest
import shapely
from rasterio.transform import from_origin

from mgimm_core.errors import AOIError, CRSError, RegionError, RegionOutsideError
from mgimm_core.regions import (AOIFeature, ChipSettings, RegionChip, chip_window, place_region, prepare_region,
                                prepare_regions, read_aoi)
from mgimm_core.scene import Scene

# An L-shape with a square hole in scene pixel coordinates (x = column, y = row, edges on integers).
L_EXTERIOR = [(2, 3), (14, 3), (14, 8), (7, 8), (7, 15), (2, 15), (2, 3)]
L_HOLE = [(3, 5), (5, 5), (5, 7), (3, 7), (3, 5)]


def expected_l_pixels(height: int, width: int) -> np.ndarray:
    """The pixels the L-shape encloses, listed cell by cell (rows, cols)."""
    cells = np.zeros((height, width), dtype=bool)
    cells[3:8, 2:14] = True      # top bar: rows 3-7, cols 2-13
    cells[8:15, 2:7] = True      # stem: rows 8-14, cols 2-6
    cells[5:7, 3:5] = False      # hole: rows 5-6, cols 3-4
    return cells


def pixel_polygon_to_crs(transform, rings, scene_crs, aoi_crs) -> shapely.Polygon:
    """Pixel-edge polygon -> scene CRS (densified along its straight scene edges) -> aoi_crs."""
    def to_world(ring):
        return [transform @ (c, r) for c, r in ring]

    poly = shapely.Polygon(to_world(rings[0]), [to_world(r) for r in rings[1:]])
    poly = shapely.segmentize(poly, abs(transform.a) / 4)
    tr = pyproj.Transformer.from_crs(scene_crs, aoi_crs, always_xy=True)
    return shapely.transform(poly, lambda x, y: tr.transform(x, y), interleaved=False)


def write_geojson(path, geometries, properties=None) -> str:
    """A plain RFC 7946 GeoJSON FeatureCollection (no 'crs' member)."""
    features = [{"type": "Feature", "properties": (properties or [{}] * len(geometries))[i],
                 "geometry": shapely.geometry.mapping(g)} for i, g in enumerate(geometries)]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return str(path)


def write_vector(path, geometries, *, crs, layer=None, driver=None, fields=None) -> str:
    """A vector file through pyogrio (GPKG, SHP, FGB, ...); crs=None writes no CRS."""
    wkb = np.array([shapely.to_wkb(g) for g in geometries], dtype=object)
    fields = fields or {"name": [f"f{i}" for i in range(len(geometries))]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)     # pyogrio warns when crs is None: intended
        pyogrio.raw.write(str(path), wkb, [np.array(v, dtype=object) for v in fields.values()],
                          list(fields), layer=layer, driver=driver, crs=crs,
                          geometry_type=geometries[0].geom_type, append=layer is not None
                          and path.exists())
    return str(path)


def mask_in_scene(chip: RegionChip, height: int, width: int) -> np.ndarray:
    """A full-resolution chip mask mapped back onto scene pixels."""
    assert chip.scale == 1.0
    out = np.zeros((height, width), dtype=bool)
    rows, cols = np.nonzero(chip.mask)
    rows, cols = rows + int(chip.window.row_off), cols + int(chip.window.col_off)
    keep = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    assert keep.all(), "mask pixels outside the scene"
    out[rows, cols] = True
    return out


def assert_exact(scene_path, aoi_path, scene_crs, *, bands=None, layer=None):
    with Scene.open(scene_path, bands=bands) as scene:
        [feature] = read_aoi(aoi_path, layer=layer)
        chip = prepare_region(scene, feature, ChipSettings(min_window=8))
        got = mask_in_scene(chip, scene.height, scene.width)
        expected = expected_l_pixels(scene.height, scene.width)
        assert np.array_equal(got, expected), (
            f"extra pixels {np.argwhere(got & ~expected).tolist()}, "
            f"missing {np.argwhere(expected & ~got).tolist()}")
        # Region geometry (scene CRS) lies within half a pixel of the drawn one, vertex by vertex.
        drawn = shapely.Polygon([scene.transform @ p for p in L_EXTERIOR],
                                [[scene.transform @ p for p in L_HOLE]])
        half_pixel = abs(scene.transform.a) / 2
        assert shapely.hausdorff_distance(chip.geometry, drawn) < half_pixel
        # The box is the L's bounds in window pixels.
        assert chip.box == pytest.approx((2 - chip.window.col_off, 3 - chip.window.row_off,
                                          14 - chip.window.col_off, 15 - chip.window.row_off),
                                         abs=0.05)
        assert chip.valid_fraction == pytest.approx(1.0)
        return chip


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("scene_crs, origin, res", [
    ("EPSG:32633", (500_000.0, 4_500_000.0), 0.5),      # UTM 33N, 0.5 m pixels
    ("EPSG:32633", (300_000.0, 6_000_000.0), 10.0),     # UTM, far from the central meridian
    ("EPSG:3857", (1_500_000.0, 7_000_000.0), 10.0),    # Web Mercator at ~53 N
    ("EPSG:3031", (-1_000_000.0, 1_200_000.0), 30.0),   # Antarctic polar stereographic
    ("EPSG:6933", (1_000_000.0, 5_000_000.0), 25.0),    # EASE-Grid 2.0 global equal-area
])
def test_lonlat_geojson_selects_exactly_the_drawn_pixels(make_raster, tmp_path, scene_crs, origin,
                                                          res):
    scene_path = make_raster(crs=scene_crs, origin=origin, res=res, width=24, height=20)
    transform = from_origin(origin[0], origin[1], res, res)
    poly = pixel_polygon_to_crs(transform, [L_EXTERIOR, L_HOLE], scene_crs, "EPSG:4326")
    aoi = write_geojson(tmp_path / "aoi.geojson", [poly])
    assert_exact(scene_path, aoi, scene_crs)


def test_web_mercator_gpkg_over_utm_scene_selects_exactly_the_drawn_pixels(make_raster, tmp_path):
    origin, res = (400_000.0, 5_800_000.0), 10.0
    scene_path = make_raster(crs="EPSG:32633", origin=origin, res=res, width=24, height=20)
    poly = pixel_polygon_to_crs(from_origin(*origin, res, res), [L_EXTERIOR, L_HOLE],
                                "EPSG:32633", "EPSG:3857")
    aoi = write_vector(tmp_path / "aoi.gpkg", [poly], crs="EPSG:3857", layer="fields")
    assert_exact(scene_path, aoi, "EPSG:32633")


def test_landsat_sample_with_lonlat_geojson_selects_exactly_the_drawn_pixels(landsat_path,
                                                                              tmp_path):
    with Scene.open(landsat_path, bands=(3, 2, 1)) as scene:
        transform, crs = scene.transform, scene.crs.to_wkt()
    poly = pixel_polygon_to_crs(transform, [L_EXTERIOR, L_HOLE], crs, "EPSG:4326")
    aoi = write_geojson(tmp_path / "olinda.geojson", [poly])
    chip = assert_exact(landsat_path, aoi, crs, bands=(3, 2, 1))
    assert chip.gsd_m == pytest.approx(28.5, rel=0.01)


def test_long_lonlat_edges_follow_their_curved_path_in_a_polar_scene(make_raster, tmp_path):
    """A parallel (straight in lon/lat) is a circle arc in polar stereographic: densification keeps
    the mask on the arc instead of on the chord between its two vertices."""
    scene_path = make_raster(crs="EPSG:3031", width=200, height=200, res=1000.0,
                             origin=(-100_000.0, 100_000.0), count=1)
    # A 4-vertex lon/lat box around the pole-centred grid: lat -88.6 .. -89.4, lon 0 .. 90.
    poly = shapely.Polygon([(0, -88.6), (90, -88.6), (90, -89.4), (0, -89.4)])
    aoi = write_geojson(tmp_path / "arc.geojson", [poly])
    with Scene.open(scene_path) as scene:
        chip = prepare_region(scene, read_aoi(aoi)[0], ChipSettings(input_size=400))
        got = mask_in_scene(chip, scene.height, scene.width)
        tr = pyproj.Transformer.from_crs("EPSG:3031", "EPSG:4326", always_xy=True)
        rows, cols = np.mgrid[0:200, 0:200]
        x, y = scene.transform @ (cols + 0.5, rows + 0.5)
        lon, lat = tr.transform(x, y)
        truth = (lat < -88.6) & (lat > -89.4) & (lon > 0) & (lon < 90)
    # Pixels whose centre is within a metre of a true edge could go either way; none here differ.
    assert np.array_equal(got, truth), np.argwhere(got != truth)[:5].tolist()


# ----------------------------------------------------------------------------- AOI sources
def test_geojson_without_crs_is_lonlat_and_keeps_ids_and_attributes(tmp_path):
    aoi = write_geojson(tmp_path / "a.geojson", [shapely.box(13, 52, 13.1, 52.1)] * 2,
                        [{"id": "field-7", "crop": "wheat"}, {"id": "field-9", "crop": "rye"}])
    features = read_aoi(aoi)
    assert [f.id for f in features] == ["field-7", "field-9"]
    assert features[1].properties == {"id": "field-9", "crop": "rye"}
    assert features[0].crs.equals(pyproj.CRS("EPSG:4326"), ignore_axis_order=True)


def test_feature_index_is_the_id_without_an_id_attribute(tmp_path):
    aoi = write_vector(tmp_path / "a.fgb", [shapely.box(0, 0, 10, 10), shapely.box(5, 5, 9, 9)],
                       crs="EPSG:32633", driver="FlatGeobuf")
    features = read_aoi(aoi)
    # FlatGeobuf's spatial index may reorder features, so ids follow the order read back.
    assert [f.id for f in features] == ["0", "1"]
    assert features[0].crs.to_epsg() == 32633
    assert sorted(f.properties["name"] for f in features) == ["f0", "f1"]


def test_geopackage_with_several_layers_needs_a_choice(tmp_path):
    path = tmp_path / "two.gpkg"
    write_vector(path, [shapely.box(0, 0, 1, 1)], crs="EPSG:4326", layer="fields")
    write_vector(path, [shapely.box(2, 2, 3, 3), shapely.box(4, 4, 5, 5)], crs="EPSG:4326",
                 layer="lakes")
    with pytest.raises(AOIError, match=r"2 layers with geometry \(fields, lakes\).*--layer"):
        read_aoi(str(path))
    assert len(read_aoi(str(path), layer="lakes")) == 2
    with pytest.raises(AOIError, match="no layer 'roads'.*fields, lakes"):
        read_aoi(str(path), layer="roads")


def test_an_output_read_as_aoi_takes_its_only_layer_with_geometry(tmp_path):
    """An mgimm-geo output (regions + the runs and layer_styles tables) needs no --layer: tables
    without geometry are never the default."""
    import pandas
    import pyogrio

    path = tmp_path / "out.gpkg"
    write_vector(path, [shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3)], crs="EPSG:4326", layer="regions")
    pyogrio.write_dataframe(pandas.DataFrame({"run_id": ["r1"]}), path, layer="runs")
    assert len(read_aoi(str(path))) == 2


def test_shapefile_without_crs_needs_the_crs_option(tmp_path):
    path = write_vector(tmp_path / "noprj.shp", [shapely.box(500_000, 4_500_000, 500_100,
                                                             4_500_100)], crs=None)
    with pytest.raises(AOIError, match=r"noprj\.shp.*no CRS.*--aoi-crs"):
        read_aoi(path)
    [feature] = read_aoi(path, crs="EPSG:32633")
    assert feature.crs.to_epsg() == 32633


def test_crs_option_overrides_a_legacy_geojson_in_projected_coordinates(tmp_path, caplog):
    aoi = write_geojson(tmp_path / "utm.geojson", [shapely.box(500_000, 4_500_000, 500_100,
                                                               4_500_100)])
    with caplog.at_level("INFO", "mgimm_core.regions"):
        [feature] = read_aoi(aoi, crs="EPSG:32633")
    assert feature.crs.to_epsg() == 32633
    # the fix for such a file, not a mistake: no warning (GDAL gives every GeoJSON EPSG:4326)
    assert not [r for r in caplog.records if r.levelname == "WARNING"] and "GeoJSON's default" in caplog.text
    # a file that states its own CRS, overridden, still warns
    gpkg = write_vector(tmp_path / "lonlat.gpkg", [shapely.box(13, 52, 13.1, 52.1)], crs="EPSG:4326")
    caplog.clear()
    read_aoi(gpkg, crs="EPSG:4258")
    assert "overrides the file's own EPSG:4326" in caplog.text


@pytest.mark.parametrize("crs", [None, "EPSG:4326"])
def test_a_geojson_in_metres_read_as_lonlat_is_refused_naming_the_fix(tmp_path, crs):
    """A legacy GeoJSON in UTM metres without a "crs" member (or given a degree CRS) is refused as a
    whole, naming --aoi-crs, instead of failing every region as outside the scene."""
    aoi = write_geojson(tmp_path / "utm.geojson", [shapely.box(291_056.25, 9_117_340.75, 292_766.25, 9_119_050.75)])
    with pytest.raises(AOIError, match=r"utm\.geojson: feature '0' spans \(291056\.25, 9117340\.75\) to "
                                       r"\(292766\.25, 9119050\.75\), which is not longitude/latitude.*--aoi-crs"):
        read_aoi(aoi, crs=crs)
    with pytest.raises(AOIError, match="not longitude/latitude"):
        read_aoi("bbox:291056,9117340,292766,9119050")
    [feature] = read_aoi("bbox:170,-89,190,-80")             # past 180 east: the antimeridian, still degrees
    assert feature.crs.to_epsg() == 4326


def test_wkt_and_bbox_sources_default_to_lonlat():
    [wkt] = read_aoi("POLYGON ((13 52, 13.1 52, 13.1 52.1, 13 52))")
    assert wkt.crs.to_epsg() == 4326 and wkt.geometry.area == pytest.approx(0.005)
    [srid] = read_aoi("SRID=32633;POLYGON ((0 0, 10 0, 10 10, 0 0))")
    assert srid.crs.to_epsg() == 32633
    [bbox] = read_aoi("bbox:13,52,13.5,52.25")
    assert bbox.geometry.bounds == (13, 52, 13.5, 52.25) and bbox.crs.to_epsg() == 4326
    [bbox_utm] = read_aoi("bbox:500000,4500000,500100,4500100", crs="EPSG:32633")
    assert bbox_utm.crs.to_epsg() == 32633


@pytest.mark.parametrize("source, message", [
    ("missing.geojson", r"no such file.*GeoJSON, GeoPackage"),
    ("bbox:1,2,3", "four numbers"),
    ("bbox:3,2,1,4", "minx < maxx"),
    ("POLYGON ((0 0, 1 1", "not valid WKT"),
])
def test_bad_sources_get_a_clear_aoi_error(tmp_path, monkeypatch, source, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AOIError, match=message):
        read_aoi(source)


def test_unreadable_aoi_file_names_the_file(tmp_path):
    path = tmp_path / "broken.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(AOIError, match=r"broken\.geojson.*cannot be read"):
        read_aoi(str(path))
    garbled = tmp_path / "garbled.geojson"
    garbled.write_text("{bad json")                   # GDAL: not recognised, with its driver-prefix advice
    with pytest.raises(AOIError, match=r"garbled\.geojson.*not recognized") as caught:
        read_aoi(str(garbled))
    assert "CSV:path" not in str(caught.value) and "check that the file is complete" in str(caught.value)


def test_a_table_without_geometry_says_so(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("id,name\n1,field\n2,lake\n")
    with pytest.raises(AOIError, match=r"table\.csv.*2 row\(s\) but no geometry.*column named WKT"):
        read_aoi(str(path))
    import pandas
    import pyogrio

    layers = tmp_path / "layers.gpkg"                  # a GeoPackage attributes table: no CSV advice there
    pyogrio.write_dataframe(pandas.DataFrame({"name": ["a"]}), layers, layer="notes")
    with pytest.raises(AOIError, match=r"1 row\(s\) but no geometry.*--layer") as caught:
        read_aoi(str(layers))
    assert "WKT" not in str(caught.value)


def test_unknown_aoi_crs_is_a_crs_error():
    with pytest.raises(CRSError, match="EPSG:999999.*EPSG:xxxx"):
        read_aoi("bbox:0,0,1,1", crs="EPSG:999999")


def test_invalid_polygon_is_repaired_with_a_warning(tmp_path, caplog):
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10), (0, 0)])
    aoi = write_vector(tmp_path / "bowtie.gpkg", [bowtie], crs="EPSG:32633")
    with caplog.at_level(logging.WARNING, logger="mgimm_core.regions"):
        [feature] = read_aoi(aoi)
    assert "invalid geometry" in caplog.text and "Self-intersection" in caplog.text
    assert feature.geometry.is_valid and feature.geometry.area == pytest.approx(50)


def test_buffer_is_in_metres_on_the_ground_for_lonlat_points():
    [feature] = read_aoi("POINT (15 40.6)", buffer=20)
    utm = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    in_metres = shapely.transform(feature.geometry, lambda x, y: utm.transform(x, y),
                                  interleaved=False)
    assert in_metres.area == pytest.approx(math.pi * 20 ** 2, rel=0.02)


# ----------------------------------------------------------------------------- region errors
def feature(geom, crs="EPSG:32633", fid="r1") -> AOIFeature:
    return AOIFeature(fid, geom, pyproj.CRS(crs), {})


def pixel_box(scene, c0, r0, c1, r1) -> shapely.Polygon:
    """A rectangle given in scene pixel edges, in the scene CRS."""
    (x0, y0), (x1, y1) = scene.transform @ (c0, r0), scene.transform @ (c1, r1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


@pytest.mark.parametrize("geom, message", [
    (shapely.Point(500_100, 4_499_900), r"a Point.*--buffer METRES"),
    (shapely.LineString([(500_100, 4_499_900), (500_200, 4_499_800)]), "a LineString"),
    (shapely.from_wkt("POLYGON EMPTY"), "empty geometry"),
])
def test_points_lines_and_empty_geometries_are_refused_per_region(make_raster, geom, message):
    with Scene.open(make_raster()) as scene:
        with pytest.raises(RegionError, match="region 'r1': " + message):
            prepare_region(scene, feature(geom))


def test_buffered_point_becomes_a_region(make_raster):
    with Scene.open(make_raster()) as scene:
        [feat] = read_aoi("SRID=32633;POINT (500105 4499895)", buffer=15)
        chip = prepare_region(scene, feat)
    # A 1.5-pixel radius around a pixel centre holds the centres of that pixel's 3 x 3 block.
    assert chip.mask.sum() == 9
    assert chip.geometry.area == pytest.approx(math.pi * 15 ** 2, rel=0.02)
    assert chip.valid_fraction == pytest.approx(1.0)


def test_region_outside_scene_errors_while_others_go_on(make_raster):
    with Scene.open(make_raster()) as scene:
        inside = feature(pixel_box(scene, 4, 4, 10, 10), fid="in")
        outside = feature(pixel_box(scene, 100, 4, 110, 10), fid="out")
        results = prepare_regions(scene, [outside, inside])
    assert isinstance(results[0], RegionError) and results[0].feature_id == "out"
    assert isinstance(results[0], RegionOutsideError) and results[0].code == "region_outside"
    assert "outside the scene" in str(results[0]) and "AOI's CRS" in str(results[0])
    assert isinstance(results[1], RegionChip) and results[1].mask.sum() == 36


def test_region_partly_outside_is_clipped_and_its_valid_fraction_recorded(make_raster):
    with Scene.open(make_raster(width=64, height=48)) as scene:
        chip = prepare_region(scene, feature(pixel_box(scene, 54, 10, 74, 20)))
        assert chip.valid_fraction == pytest.approx(0.5)
        assert chip.mask.sum() == 100                     # the 10 x 10 pixels inside the scene
        left, bottom, right, top = chip.geometry.bounds
        assert right == pytest.approx(scene.bounds.right)


def test_valid_fraction_excludes_nodata_pixels(make_raster):
    data = np.full((3, 48, 64), 9, dtype="uint8")
    data[:, :, 20:] = 0                                   # nodata from column 20 on
    with Scene.open(make_raster(data=data, nodata=0)) as scene:
        chip = prepare_region(scene, feature(pixel_box(scene, 10, 10, 30, 20)))
    assert chip.valid_fraction == pytest.approx(0.5)


def test_raster_without_crs_refuses_lonlat_aoi(make_raster):
    with Scene.open(make_raster(crs=None)) as scene:
        with pytest.raises(CRSError, match="no CRS.*gdal_edit.py -a_srs"):
            prepare_region(scene, feature(shapely.box(13, 52, 13.1, 52.1), crs="EPSG:4326"))


def test_raster_without_crs_takes_projected_aoi_in_its_own_coordinates(make_raster, caplog):
    with Scene.open(make_raster(crs=None)) as scene:
        with caplog.at_level(logging.WARNING, logger="mgimm_core.regions"):
            chip = prepare_region(scene, feature(pixel_box(scene, 4, 4, 10, 10)))
    assert "has no CRS" in caplog.text and chip.mask.sum() == 36
    assert math.isnan(chip.gsd_m)                         # no metric scale without a CRS


def test_raster_crs_proj_cannot_transform_to_is_a_crs_error(make_raster):
    local = 'LOCAL_CS["site grid",UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'
    with Scene.open(make_raster(crs=local)) as scene:
        with pytest.raises(CRSError, match=r"scene\.tif: AOI features in WGS 84 cannot be placed.*"
                                           r"gdal_edit\.py -a_srs"):
            prepare_region(scene, feature(shapely.box(13, 52, 13.1, 52.1), crs="EPSG:4326"))


def test_coordinates_beyond_the_crs_domain_fail_only_that_region(make_raster):
    with Scene.open(make_raster()) as scene:
        [bad] = read_aoi("bbox:0,89,10,95")                 # latitude 95 does not exist
        with pytest.raises(RegionError, match="region '0': some coordinates cannot be transformed"):
            prepare_region(scene, bad)


# ----------------------------------------------------------------------------- windows
def test_a_region_inside_one_pixel_says_it_is_described_from_that_pixel(make_raster, caplog):
    """A 0.2 x 0.5 pixel region covers no pixel centre: it gets the pixel it touches, and the warning
    says how small it is at the scene's GSD (10 m here) and what its description is of."""
    with Scene.open(make_raster(width=200, height=200)) as scene, caplog.at_level("WARNING", "mgimm_core.regions"):
        chip = prepare_region(scene, feature(pixel_box(scene, 100.1, 100.2, 100.3, 100.7)), ChipSettings(min_window=64))
    assert chip.mask.sum() == 1
    assert "'r1' covers no pixel centre (its area is 0.1 of the 10 m pixels" in caplog.text
    assert "not of anything smaller inside them" in caplog.text


def test_tiny_region_gets_the_minimum_context_window(make_raster):
    with Scene.open(make_raster(width=200, height=200)) as scene:
        chip = prepare_region(scene, feature(pixel_box(scene, 100, 100, 101, 101)), ChipSettings(min_window=64))
    assert (chip.window.width, chip.window.height, chip.out_shape) == (64, 64, (64, 64))
    assert chip.mask.sum() == 1
    x1, y1, x2, y2 = chip.box
    assert (x2 - x1, y2 - y1) == pytest.approx((1, 1))
    assert 0 < x1 < 63 and 0 < y1 < 63


def test_large_region_is_read_at_model_input_with_mask_and_box_in_that_grid(make_raster):
    with Scene.open(make_raster(width=200, height=160)) as scene:
        region = pixel_box(scene, 20, 30, 140, 110)        # 120 x 80 pixels
        chip = prepare_region(scene, feature(region), ChipSettings(input_size=32, context=0.25))
        assert chip.window.width == chip.window.height == 180   # 120 * 1.5
        assert chip.out_shape == (32, 32) and chip.scale == pytest.approx(180 / 32)
        s, c0, r0 = chip.scale, chip.window.col_off, chip.window.row_off
        assert chip.box == pytest.approx(((20 - c0) / s, (30 - r0) / s, (140 - c0) / s,
                                          (110 - r0) / s))
        # The mask holds the reduced pixels whose centre lies inside the region.
        rows, cols = np.mgrid[0:32, 0:32]
        inside = ((c0 + (cols + 0.5) * s > 20) & (c0 + (cols + 0.5) * s < 140)
                  & (r0 + (rows + 0.5) * s > 30) & (r0 + (rows + 0.5) * s < 110))
        assert np.array_equal(chip.mask, inside)
        assert chip.gsd_m == pytest.approx(10.0 * s, rel=1e-3)
        assert chip.image.shape == (32, 32, 3) and chip.valid.shape == (32, 32)


def test_window_stays_inside_the_scene_when_it_fits():
    window, shape = chip_window((0.0, 0.0, 4.0, 4.0), scene_width=100, scene_height=100,
                                model_input=336, context=0.25, min_window=16)
    assert (window.col_off, window.row_off, window.width, shape) == (0, 0, 16, (16, 16))
    window, _ = chip_window((95.0, 40.0, 100.0, 45.0), scene_width=100, scene_height=100,
                            model_input=336, context=0.25, min_window=16)
    assert window.col_off == 84 and 32 <= window.row_off <= 40


# ================================================================== antimeridian
def _lonlat_feature(geom, fid="am"):
    return AOIFeature(fid, geom, pyproj.CRS.from_epsg(4326), {})


@pytest.fixture
def antimeridian_scene(make_raster):
    """A lon/lat scene from 175 to 185 degrees east (across the antimeridian), 0.1 degree pixels."""
    path = make_raster("am.tif", width=100, height=50, crs="EPSG:4326", res=0.1, origin=(175.0, 0.0))
    with Scene.open(path) as scene:
        yield scene


def test_a_split_multipolygon_keeps_both_halves_on_a_scene_across_the_antimeridian(antimeridian_scene):
    halves = shapely.MultiPolygon([shapely.box(178, -2, 180, -1), shapely.box(-180, -2, -178, -1)])
    placement = place_region(antimeridian_scene, _lonlat_feature(halves))
    assert placement.inside_share == pytest.approx(1.0)
    assert placement.geometry.bounds == pytest.approx((178, -2, 182, -1))
    assert int(placement.mask.sum()) == 40 * 10 // int(placement.scale) ** 2


def test_a_ring_jumping_across_the_antimeridian_is_read_the_short_way_with_a_warning(antimeridian_scene, caplog):
    with caplog.at_level("WARNING", logger="mgimm_core.regions"):
        [feature] = read_aoi("POLYGON ((179 -1, -179 -1, -179 -2, 179 -2, 179 -1))")
        placement = place_region(antimeridian_scene, feature)
    assert placement.geometry.bounds == pytest.approx((179, -2, 181, -1))
    assert placement.inside_share == pytest.approx(1.0)
    assert "antimeridian" in caplog.text and "'0'" in caplog.text
    assert "repaired" not in caplog.text           # unwrapped before make_valid could cut it up


def test_an_antimeridian_ring_on_a_projected_scene_is_placed_where_it_is(make_raster):
    # UTM zone 1N starts at 180 degrees: 20 km around its false-easting edge, near the equator
    to_utm = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32601", always_xy=True)
    x0, y0 = to_utm.transform(-179.9, 0.3)
    path = make_raster("utm1.tif", width=200, height=100, crs="EPSG:32601", res=200.0, origin=(x0 - 20000, y0))
    with Scene.open(path) as scene:
        [feature] = read_aoi("POLYGON ((179.95 0.2, -179.95 0.2, -179.95 0.25, 179.95 0.25, 179.95 0.2))")
        placement = place_region(scene, feature)
    width_m = placement.geometry.bounds[2] - placement.geometry.bounds[0]
    assert placement.inside_share == pytest.approx(1.0) and 10_000 < width_m < 12_000    # 0.1 degree, not 359.9


def test_a_sliver_along_the_scene_edge_that_gdal_misses_still_gets_its_pixel(make_raster):
    # found by tests/core/test_regions_properties.py: GDAL's all_touched rasterisation returns no pixel for
    # this sliver, and an empty mask made read_region divide by zero
    path = make_raster(width=8, height=8, res=1.0, origin=(500000.0, 4_500_000.0))
    sliver = shapely.box(500000 + 1e-9, 4_500_000 - 0.25, 500001 - 1e-9, 4_500_000)
    with Scene.open(path) as scene:
        chip = prepare_region(scene, AOIFeature("s", sliver, pyproj.CRS.from_epsg(32633), {}))
    assert chip.mask.sum() == 1 and chip.mask[-int(chip.window.row_off), -int(chip.window.col_off)]  # scene (0, 0)
    assert chip.valid_fraction == pytest.approx(1.0)


def test_found_by_fuzzing_bytes_that_are_not_utf8_and_unbufferable_coordinates_are_aoi_errors(tmp_path):
    # tests/core/test_fuzz.py found both escaping as UnicodeDecodeError and pyproj's CRSError
    bad = tmp_path / "aoi.csv"
    bad.write_bytes(b"\x80")
    with pytest.raises(AOIError, match="cannot be read"):
        read_aoi(str(bad))
    with pytest.raises(AOIError, match="cannot be buffered"):
        read_aoi("bbox:-1.0,0.0,0.0,1e+300", buffer=5.0, crs="EPSG:32633")
    with pytest.raises(AOIError, match="not longitude/latitude"):       # in degrees: refused before buffering
        read_aoi("bbox:-1.0,0.0,0.0,1e+300", buffer=5.0)
