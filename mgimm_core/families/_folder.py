"""Facts read from a transformers-native model folder's own files (no torch): the image processor's tile
and the model card's licence. For family modules (mgimm_core/families)."""

from __future__ import annotations

import re
from pathlib import Path

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


def processor_tile(directory: Path) -> int | None:
    """The side of the square image the folder's image processor resizes to (preprocessor_config.json
    `size`), else None."""
    path = directory / "preprocessor_config.json"
    size = read_json(path).get("size") if path.is_file() else None
    if not isinstance(size, dict):
        return None
    if isinstance(size.get("height"), int) and size.get("height") == size.get("width"):
        return int(size["height"])
    return int(size["shortest_edge"]) if isinstance(size.get("shortest_edge"), int) else None
