"""Facts read from a transformers-native model folder's own files (no torch): the image processor's tile
and the licence its card or LICENSE names (the one reader of cards every family uses). For family modules
(mgimm_core/families)."""

from __future__ import annotations

from typing import Any
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
    found: dict[str, str] = {key: value.strip().strip("'\"")
                             for key, value in re.findall(r"^(license(?:_name)?):\s*(.+)$", head, re.M)}
    if found.get("license") == "other" and found.get("license_name"):
        return found["license_name"]
    return found.get("license") or None


def named_licence(name: str, note: str) -> Licence:
    """A licence the folder's files name (its card, its LICENSE), non-commercial where the name says
    so: an `nc` part (cc-by-nc-4.0, cc-by-nc-sa-4.0), `non-commercial` or `research` in it."""
    lowered = name.lower()
    non_commercial = "nc" in lowered.split("-") or "non-commercial" in lowered or "research" in lowered
    return Licence(name, non_commercial=non_commercial, note=note)


def image_processor_settings(directory: Path) -> dict[str, Any]:
    """The settings the folder's image processor is built from, where transformers 5 looks for them: the
    `image_processor` nested in processor_config.json (its save_pretrained), else preprocessor_config.json
    (the Hub's folders, transformers 4); {} where neither holds them."""
    path = directory / "processor_config.json"
    nested = read_json(path).get("image_processor") if path.is_file() else None
    if isinstance(nested, dict):
        return nested
    path = directory / "preprocessor_config.json"
    return read_json(path) if path.is_file() else {}


def processor_tile(directory: Path) -> int | None:
    """The side of the square image the folder's image processor resizes to (its `size`), else None."""
    size = image_processor_settings(directory).get("size")
    if not isinstance(size, dict):
        return None
    if isinstance(size.get("height"), int) and size.get("height") == size.get("width"):
        return int(size["height"])
    if isinstance(size.get("shortest_edge"), int):
        return int(size["shortest_edge"])
    return None
