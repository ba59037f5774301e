"""Facts read from a transformers-native model folder's own files (no torch): the image processor's tile
and the licence its card or LICENSE names (the one reader of cards every family uses). For family modules
(mgimm_core/families)."""

from __future__ import annotations

import re
from pathlib import Path

from mgimm_core.families.base import Licence
from mgimm_core.model_formats import read_json


def card_licence(directory: Path) -> str | None:
    """The licence a Hugging Face model card states in its front matter (README.md `license:`, or
    `license_name:` where the licence is `other`), else None."""
    path = directory / "README.md"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    head = text[3:].split("\n---", 1)[0]
    found = {key: value.strip().strip("'\"") for key, value in re.findall(r"^(license(?:_name)?):\s*(.+)$", head, re.M)}
    if found.get("license") == "other" and found.get("license_name"):
        return found["license_name"]
    return found.get("license") or None


def named_licence(name: str, note: str) -> Licence:
    """A licence the folder's files name (its card, its LICENSE), non-commercial where the name says
    so: an `nc` part (cc-by-nc-4.0, cc-by-nc-sa-4.0), `non-commercial` or `research` in it."""
    lowered = name.lower()
    non_commercial = "nc" in lowered.split("-") or "non-commercial" in lowered or "research" in lowered
    return Licence(name, non_commercial=non_commercial, note=note)


def processor_tile(directory: Path) -> int | None:
    """The side of the square image the folder's image processor resizes to: its `size`, from
    preprocessor_config.json, or from processor_config.json where transformers 5 nests the image
    processor (`image_processor`); else None."""
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = directory / name
        settings = read_json(path) if path.is_file() else {}
        size = settings.get("image_processor", settings).get("size")
        if not isinstance(size, dict):
            continue
        if isinstance(size.get("height"), int) and size.get("height") == size.get("width"):
            return int(size["height"])
        if isinstance(size.get("shortest_edge"), int):
            return int(size["shortest_edge"])
    return None
