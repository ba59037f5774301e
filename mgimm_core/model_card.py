"""A model's card (`model_card.json` beside its weights): the imagery it was trained on.

`ModelDirectory.card` reads it, `model-info` shows it, and `gsd_warning` compares a scene with it, so
a user learns before reading the output that a 0.5 m model is describing 30 m pixels;
`synthetic_warning` says so when a model trained on synthetic scenes only reads a real one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mgimm_core.model_formats import read_json

#: Optional card beside the weights: {"imagery": "...", "gsd_m": [min, max], "bands": "RGB", ...}.
CARD_FILE = "model_card.json"

#: A scene this many times finer or coarser than the card's range gets a warning.
GSD_TOLERANCE = 4.0

#: The GeoTIFF tag (name, value) that training/synthetic/export.py writes on every generated scene:
#: a card with "synthetic_only" warns on any scene without it (a real one).
SYNTHETIC_SCENE_TAG = ("generator", "training.synthetic")


def read_card(path: Path) -> dict[str, Any]:
    """The model card's facts ({} when the directory has none)."""
    return read_json(path / CARD_FILE) if (path / CARD_FILE).is_file() else {}


def synthetic_warning(card: dict[str, Any], scene_tags: dict[str, str], scene_name: str) -> str | None:
    """One line when a model trained on synthetic scenes only reads a scene the synthetic world did
    not write (SYNTHETIC_SCENE_TAG): real imagery, on which such a model is measured to be often
    wrong. None for other models and for generated scenes."""
    name, value = SYNTHETIC_SCENE_TAG
    if not card.get("synthetic_only") or scene_tags.get(name) == value:
        return None
    return (f"{scene_name}: the model was trained on synthetic scenes only (its model card); on real imagery "
            f"its descriptions are often wrong (docs/demo_v3.md: real Landsat scenes). Check them against the "
            f"image.")


def gsd_warning(card: dict[str, Any], scene_gsd_m: float, scene_name: str) -> str | None:
    """One line when a scene's pixels are far from the card's GSD range; None when close or unknown."""
    span = card.get("gsd_m")
    if not span or not math.isfinite(scene_gsd_m) or scene_gsd_m <= 0:
        return None
    low, high = (float(span[0]), float(span[-1])) if isinstance(span, list) else (float(span), float(span))
    if low / GSD_TOLERANCE <= scene_gsd_m <= high * GSD_TOLERANCE:
        return None
    trained = f"{low:g} m" if low == high else f"{low:g}-{high:g} m"
    imagery = f" ({card['imagery']})" if card.get("imagery") else ""
    return (f"{scene_name}: {scene_gsd_m:.3g} m pixels, but the model was trained on {trained} imagery{imagery}; "
            f"its descriptions of this scene are likely wrong.")
