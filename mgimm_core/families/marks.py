"""Regions for models without a text convention: the polygon's outline drawn on the chip (a visual
prompt), or the chip cropped to the region. Pure numpy; the geo core's box and mask in chip pixels in."""

from __future__ import annotations

import numpy as np

from mgimm_core.families.regions import BoxLike

#: Outline colour: pure red stands out on most imagery and is what the questions name.
OUTLINE_RGB = (255, 0, 0)
OUTLINE_NAME = "red"


def outline(chip: np.ndarray, box: BoxLike, mask: np.ndarray | None = None, width: int | None = None) -> np.ndarray:
    """A copy of `chip` (H x W x 3 uint8) with the region's boundary drawn: the polygon mask's edge
    pixels when there is a mask, else the box's edges; `width` pixels thick (default ~1% of the chip)."""
    image = np.array(chip, dtype=np.uint8, copy=True)
    h, w = image.shape[:2]
    width = width or max(1, round(max(h, w) / 100))
    if mask is not None and mask.any():
        inside = np.asarray(mask, dtype=bool)
    else:
        x1, y1, x2, y2 = _pixel_box(box, w, h)
        inside = np.zeros((h, w), dtype=bool)
        inside[y1:y2, x1:x2] = True
    edge = inside & ~_eroded(inside, width)
    image[edge] = OUTLINE_RGB
    return image


def crop(chip: np.ndarray, box: BoxLike, margin: float = 0.1, square: bool = False) -> np.ndarray:
    """The part of `chip` around `box`, with `margin` of the box's larger side on each side. square:
    a square around the box's centre (shifted to stay inside the chip, as wide as the chip allows), for
    models whose processor resizes every image to a square (a stretched crop misstates shapes)."""
    h, w = chip.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    pad = margin * max(x2 - x1, y2 - y1)
    if square:
        half = max(x2 - x1, y2 - y1) / 2 + pad
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        cx, cy = min(max(cx, half), w - half), min(max(cy, half), h - half)   # inside the chip where it fits
        x1, y1, x2, y2 = cx - half + pad, cy - half + pad, cx + half - pad, cy + half - pad
    left, top, right, bottom = _pixel_box((x1 - pad, y1 - pad, x2 + pad, y2 + pad), w, h)
    return np.ascontiguousarray(chip[top:bottom, left:right])


def _pixel_box(box: BoxLike, w: int, h: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (float(v) for v in box)
    left, top = int(np.clip(np.floor(x1), 0, w - 1)), int(np.clip(np.floor(y1), 0, h - 1))
    right, bottom = int(np.clip(np.ceil(x2), left + 1, w)), int(np.clip(np.ceil(y2), top + 1, h))
    return left, top, right, bottom


def _eroded(inside: np.ndarray, steps: int) -> np.ndarray:
    """`inside` shrunk by `steps` pixels (4-neighbourhood; outside the chip counts as outside)."""
    result = inside.copy()
    for _ in range(steps):
        padded = np.pad(result, 1, constant_values=False)
        result = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return result
