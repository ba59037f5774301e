"""The synthetic world: deterministic scenes, real GeoTIFF/GeoPackage output, text and reference files."""

import json
import re
from collections import Counter

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.enums import ColorInterp
from rasterio.features import geometry_mask

from mgimm_core.vocabulary import number_word, parse_attributes, plural
from training.synthetic import describe_tile, generate_scene
from training.synthetic.__main__ import main as cli_main
from training.synthetic.export import export_scenes, write_geotiff, write_objects
from training.synthetic.text import objects_in

SIZE = 384


@pytest.fixture(scope="module")
def scene_with_buildings():
    """The first small scene (by seed) holding red and white/grey roofs: found, not hand-picked."""
    for seed in range(40):
        scene = generate_scene(seed, SIZE, 0.5)
        colors = {o.color for o in scene.objects if o.name == "building"}
        if "red" in colors and len(scene.objects) >= 5:
            return scene
    pytest.fail("no seed < 40 produced red buildings at 384 px")


def test_same_seed_same_scene_other_seed_other_scene():
    a, b, c = generate_scene(11, 256), generate_scene(11, 256), generate_scene(12, 256)
    assert np.array_equal(a.image, b.image)
    assert [o.footprint.wkt for o in a.objects] == [o.footprint.wkt for o in b.objects]
    assert (a.crs, a.transform) == (b.crs, b.transform)
    assert not np.array_equal(a.image, c.image)
    assert a.image.shape == (256, 256, 3) and a.image.dtype == np.uint8


def test_image_is_textured_not_flat():
    scene = generate_scene(5, 256)
    # Within a land-cover class, neighbouring pixels still differ (texture and noise).
    grad = np.abs(np.diff(scene.image.astype(int), axis=1)).mean()
    assert grad > 1.5
    assert len(np.unique(scene.image.reshape(-1, 3), axis=0)) > 5000


def test_geotiff_has_crs_transform_overviews(tmp_path, scene_with_buildings):
    scene = scene_with_buildings
    path = tmp_path / "scene.tif"
    write_geotiff(scene, path)
    with rasterio.open(path) as ds:
        assert ds.crs == rasterio.crs.CRS.from_user_input(scene.crs)
        assert ds.crs.is_projected
        assert ds.transform == scene.transform and ds.transform.a == 0.5
        assert ds.count == 3 and ds.dtypes == ("uint8",) * 3
        assert ds.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert ds.compression.name == "deflate" and ds.block_shapes[0] == (256, 256)
        assert ds.overviews(1) == [2, 4]
        assert np.array_equal(ds.read().transpose(1, 2, 0), scene.image)


def test_objects_layer_reads_back_on_the_drawn_pixels(tmp_path, scene_with_buildings):
    scene = scene_with_buildings
    tif, gpkg = tmp_path / "scene.tif", tmp_path / "objects.gpkg"
    write_geotiff(scene, tif)
    write_objects(scene, gpkg)
    info = pyogrio.read_info(gpkg)
    assert info["features"] == len(scene.objects)
    assert {"name", "color", "shape", "size", "orientation", "position", "caption"} <= set(info["fields"])
    meta, _, geoms, fields = pyogrio.raw.read(gpkg)
    assert rasterio.crs.CRS.from_user_input(meta["crs"]) == rasterio.crs.CRS.from_user_input(scene.crs)
    names = dict(zip(meta["fields"], fields))
    with rasterio.open(tif) as ds:
        image, transform = ds.read(), ds.transform
    checked = Counter()
    for i, wkb in enumerate(geoms):
        poly = shapely.from_wkb(wkb)
        if names["name"][i] != "building" or poly.area < 40:  # m², at least ~160 pixels
            continue
        inside = ~geometry_mask([poly.buffer(-0.6)], image.shape[1:], transform)
        r, g, b = (image[k][inside].mean() for k in range(3))
        color = names["color"][i]
        if color == "red":
            assert r > g + 30 and r > b + 30, (r, g, b)
        elif color == "white":
            assert min(r, g, b) > 150, (r, g, b)
        elif color == "blue":
            assert b > r + 20, (r, g, b)
        checked[color] += 1
        assert parse_attributes(names["caption"][i])["color"] == color
    assert checked["red"] >= 1


def test_description_names_every_class_with_its_count(scene_with_buildings):
    scene = scene_with_buildings
    rng = np.random.default_rng(0)
    for window in [(0, 0, SIZE, SIZE), (0, 0, SIZE // 2, SIZE // 2), (SIZE // 2, SIZE // 2, SIZE // 2, SIZE // 2)]:
        text = describe_tile(scene, window, rng)
        counts = Counter(o.name for o in objects_in(scene.objects, window))
        for name, n in counts.items():
            noun = name if n == 1 else plural(name)
            pattern = rf"\b{number_word(n)}\b(?: [\w-]+){{0,3}} {noun}\b"
            assert re.search(pattern, text, re.IGNORECASE), (name, n, text)


def test_export_writes_reference_formats_with_boxes_inside_images(tmp_path):
    scenes = [generate_scene(3, 256), generate_scene(4, 256)]
    counts = export_scenes(scenes, tmp_path, np.random.default_rng(0), tile=128)
    regions = json.loads((tmp_path / "regions.json").read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in regions["images"]}
    assert len(regions["annotations"]) == sum(len(s.objects) for s in scenes) == counts["region_chips"]
    for ann in regions["annotations"]:
        x, y, w, h = ann["bbox"]
        W, H = sizes[ann["image_id"]]
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= W + 1e-6 and y + h <= H + 1e-6
        assert parse_attributes(ann["caption"])["name"] is not None
    descriptions = json.loads((tmp_path / "descriptions.json").read_text())
    assert len(descriptions) == 2 * 4
    for d in descriptions:
        with rasterio.open(tmp_path / "chips" / d["file_name"]) as ds:
            assert (ds.width, ds.height) == (d["width"], d["height"])
        human, gpt = d["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<image>\n")
        assert gpt["from"] == "gpt" and len(gpt["value"]) > 20
        for x, y, w, h in d["bbox"]:
            assert x >= 0 and y >= 0 and x + w <= d["width"] + 1e-6 and y + h <= d["height"] + 1e-6
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == counts["records"]
    record = json.loads(lines[0])
    assert (tmp_path / record["image"]).exists()
    region = record["regions"][0]
    assert set(region) == {"bbox", "polygon", "attributes", "caption"}
    assert region["attributes"]["name"] == parse_attributes(region["caption"])["name"]


def test_cli_writes_a_dataset(tmp_path, capsys):
    assert cli_main(["--out", str(tmp_path), "--scenes", "1", "--seed", "9", "--size", "128",
                     "--crs", "EPSG:32633"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scenes"] == 1
    with rasterio.open(tmp_path / "scenes" / "scene_000009.tif") as ds:
        assert ds.crs.to_epsg() == 32633


def test_landcover_sentence_places_a_thin_class_in_a_small_window():
    """A class the every-4th-pixel grid misses (two columns of a 24 px window) is still placed."""
    from training.synthetic.text import _landcover_sentence

    labels = np.zeros((24, 24), np.int64)
    labels[:, 1:3] = 3  # 8% of the window, on columns 1-2 only
    assert _landcover_sentence(labels, np.random.default_rng(0)).endswith("forest occupies the west.")
