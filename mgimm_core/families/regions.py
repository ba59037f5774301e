"""Region conventions: how a region placed by the geo core (a box in chip pixels) is written for a model.

Each model family was trained to read a region one way (../shared/reference.md section 8 lists
them); a region written in another family's way gets a confident answer about the wrong place. A
`RegionConvention` turns a chip-pixel box into the numbers and text its family reads, and back
(`decode`, for round-trip checks and for reading boxes a model answers with). Pure numpy: no torch.

`ModelSpace` is the image the model sees: the chip after its processor's resize (Qwen2.5-VL's
absolute pixels are pixels of that resized image; relative conventions ignore it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelSpace:
    """Width and height, in pixels, of the image the model sees for a chip."""

    width: int
    height: int


Box = tuple[float, float, float, float]
#: a box as callers hand it in: a Box, any four numbers, or a numpy array of four
BoxLike = Sequence[float] | np.ndarray
#: a region or a guide object on a chip: its box and its polygon mask (None: the box alone), in chip pixels
BoxMask = tuple[BoxLike, np.ndarray | None]


def _clip_unit(box: BoxLike, width: float, height: float) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    unit: np.ndarray = np.clip(np.array([x1 / width, y1 / height, x2 / width, y2 / height]), 0.0, 1.0)
    return unit


@dataclass(frozen=True)
class RegionConvention:
    """One way of writing a region; `scale` numbers per unit of the chip side, `rounding` how they are
    made integers ("round", "floor" for Florence-2's bins, "none" for decimals), `form` the text."""

    name: str
    scale: float | None          # None: absolute pixels of the model space
    rounding: str                # round | floor | decimals2
    form: str                    # key of _FORMS
    angle: bool = False          # GeoChat's trailing |θ
    bins: int | None = None      # Florence-2: number of bins (values 0..bins-1, decoded at bin centres)

    def encode(self, box: BoxLike, chip_width: int, chip_height: int,
               space: ModelSpace | None = None) -> tuple[float, ...]:
        """The region's numbers in this convention (x1, y1, x2, y2)."""
        unit = _clip_unit(box, chip_width, chip_height)
        if self.scale is None:
            space = space or ModelSpace(chip_width, chip_height)
            values = unit * np.array([space.width, space.height, space.width, space.height])
        else:
            values = unit * self.scale
        if self.rounding == "floor":
            top = (self.bins or int(self.scale or 1)) - 1
            return tuple(int(min(max(math.floor(v), 0), top)) for v in values)
        if self.rounding == "decimals2":
            return tuple(round(float(v), 2) for v in values)
        return tuple(int(round(float(v))) for v in values)

    def decode(self, values: Sequence[float], chip_width: int, chip_height: int,
               space: ModelSpace | None = None) -> Box:
        """Chip-pixel box of `values` (the inverse of encode, up to its rounding)."""
        v = np.asarray(values, dtype=np.float64)
        if self.rounding == "floor":
            v = v + 0.5                          # a bin stands for its centre
        if self.scale is None:
            space = space or ModelSpace(chip_width, chip_height)
            unit = v / np.array([space.width, space.height, space.width, space.height])
        else:
            unit = v / self.scale
        x1, y1, x2, y2 = unit * np.array([chip_width, chip_height, chip_width, chip_height])
        return float(x1), float(y1), float(x2), float(y2)

    def text(self, values: Sequence[float]) -> str:
        """The region as the family's prompt writes it."""
        return _FORMS[self.form](values, self)

    def write(self, box: BoxLike, chip_width: int, chip_height: int, space: ModelSpace | None = None) -> str:
        return self.text(self.encode(box, chip_width, chip_height, space))


def _list(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in values) + "]"


_FORMS = {
    # LLaVA-1.5's box in the question: [x1, y1, x2, y2] in 0..1, two decimals
    "list": lambda values, c: _list(values),
    # GeoChat: {<x1><y1><x2><y2>|θ}, 0..100, θ 0 for the axis-aligned boxes the geo core places
    "geochat": lambda values, c: "{" + "".join(f"<{v}>" for v in values) + "|0}",
    # Qwen2.5-VL / Qwen3-VL grounding JSON
    "bbox_2d": lambda values, c: json.dumps({"bbox_2d": list(values)}),
    # InternVL 2.5/3
    "internvl": lambda values, c: f"<box>[{_list(values)}]</box>",
    # Florence-2 location tokens
    "loc": lambda values, c: "".join(f"<loc_{v}>" for v in values),
}

#: Every convention a family may name.
CONVENTIONS = {c.name: c for c in (
    RegionConvention("unit_box", 1.0, "decimals2", "list"),
    RegionConvention("geochat_0_100", 100.0, "round", "geochat", angle=True),
    RegionConvention("qwen_pixels", None, "round", "bbox_2d"),
    RegionConvention("qwen_1000", 1000.0, "round", "bbox_2d"),
    RegionConvention("internvl_1000", 1000.0, "round", "internvl"),
    RegionConvention("florence_bins", 1000.0, "floor", "loc", bins=1000),
)}

#: Ways a region reaches a model: learned region tokens (MGIMM), text in its convention, an outline
#: drawn on the chip (a visual prompt), or the chip cropped to the region.
REGION_AS = ("tokens", "text", "outline", "crop")
