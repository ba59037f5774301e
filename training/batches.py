"""Training examples -> processor batches.

Every data source (the synthetic world, the reference formats, the project's JSONL) is turned into
`Example`s: an image chip, its region boxes (and optional polygon masks), a prompt and an answer.
`collate` hands them to `MGIMMProcessor`, so training sees exactly the preprocessing of inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.features import rasterize
from shapely.geometry import Polygon


@dataclass
class Example:
    image: np.ndarray                 # uint8 (h, w, 3)
    boxes: np.ndarray                 # float (R, 4): x1, y1, x2, y2 in chip pixels
    masks: list | None                # R bool (h, w) masks or None entries; None: boxes only
    prompt: str
    answer: str
    kind: str = "region"              # "region" or "description"
    attributes: dict | None = None


def collate(processor, examples: list[Example], mode: str):
    """A padded training batch (right padding; labels only on the answers)."""
    return processor([e.image for e in examples], boxes=[e.boxes for e in examples],
                     masks=[e.masks for e in examples], prompts=[e.prompt for e in examples],
                     answers=[e.answer for e in examples], mode=mode, padding_side="right")


def read_image(path: str) -> np.ndarray:
    """An image file (PNG, JPEG, GeoTIFF...) as uint8 (h, w, 3); grey is repeated, alpha dropped."""
    with rasterio.open(path) as src:
        data = src.read()
    if data.shape[0] == 1:
        data = np.repeat(data, 3, axis=0)
    return np.ascontiguousarray(np.moveaxis(data[:3], 0, -1)).astype(np.uint8, copy=False)


def polygon_mask(polygon, height: int, width: int) -> np.ndarray:
    """Pixels whose centres lie inside a polygon given in pixel coordinates."""
    return rasterize([(Polygon(polygon), 1)], out_shape=(height, width), fill=0, dtype="uint8").astype(bool)


def example_from_sample(sample, kind: str) -> Example:
    """A reader sample (`training.data.RegionSample` / `DescriptionSample`) with its image loaded."""
    image = read_image(sample.image_path)
    h, w = image.shape[:2]
    boxes = np.asarray(sample.boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    masks = None
    if getattr(sample, "polygons", None):
        masks = [polygon_mask(p, h, w) if p else None for p in sample.polygons]
    return Example(image, boxes, masks, sample.prompt, sample.answer, kind,
                   getattr(sample, "attributes", None))
