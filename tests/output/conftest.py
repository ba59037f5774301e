"""Shared by the output tests: a small generated scene, the tiny model's engine, and an AOI whose
order no batching keeps."""

from __future__ import annotations

import geopandas
import pytest
import rasterio
import shapely

import mgimm_core
from training.synthetic.demo_inputs import write_demo_inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_demo_inputs(tmp_path_factory.mktemp("order_inputs"), seed=5, size=256, objects=2)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = mgimm_core.load_model(tiny_model_dir, max_new_tokens=2, threads=1)
    yield engine
    engine.close()


def regions(scene) -> geopandas.GeoDataFrame:
    """Seven regions whose sizes alternate (batches of two group them by size, not AOI order), the
    fourth outside the scene (an error row, written before any batch)."""
    with rasterio.open(scene) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    step = (right - left) / 8
    boxes = []
    for i in range(7):
        side = step * (0.3 if i % 2 else 2.5)
        x, y = left + step * (i % 4 + 0.5), top - step * (i // 4 + 0.5) * 3
        boxes.append(shapely.box(x, y - side, x + side, y))
    boxes[3] = shapely.box(right + 10 * step, top, right + 11 * step, top + step)     # outside
    ids = ["g", "b", "e", "a", "f", "c", "d"]                  # not sorted: the order is the AOI's
    return geopandas.GeoDataFrame({"id": ids}, geometry=boxes, crs=crs)
