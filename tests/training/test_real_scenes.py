"""The real-scene check (training/real_scenes.py): its hand-placed AOIs lie on the Recife sample, in
EPSG:4326 as a user's file, and every label is scored against covers the synthetic world has."""

from __future__ import annotations

import json

import rasterio
import shapely
from pyproj import Transformer

from training.real_scenes import LABEL_COVERS, RECIFE, RECIFE_AOIS, recife_case
from training.synthetic.landcover import LANDCOVER_NAMES


def test_recife_aois_lie_on_the_scene_where_they_were_placed(tmp_path):
    case = recife_case(tmp_path)
    features = json.loads(open(case["aoi"]).read())["features"]
    assert [f["properties"]["id"] for f in features] == [a[0] for a in RECIFE_AOIS]
    with rasterio.open(RECIFE) as src:
        to_scene = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True)
        frame = shapely.box(*src.bounds)
        for feature, (_, _, col, row, size) in zip(features, RECIFE_AOIS):
            box = shapely.transform(shapely.geometry.shape(feature["geometry"]),
                                    lambda xy: list(zip(*to_scene.transform(xy[:, 0], xy[:, 1]))))
            assert frame.contains(box)
            x, y = ~src.transform @ (box.centroid.x, box.centroid.y)
            assert abs(x - (col + size / 2)) < 1 and abs(y - (row + size / 2)) < 1


def test_every_label_is_scored_against_covers_of_the_world():
    assert {a[1] for a in RECIFE_AOIS} <= set(LABEL_COVERS)
    for label, covers in LABEL_COVERS.items():
        assert covers and covers <= set(LANDCOVER_NAMES), label
