"""The model families mgimm-geo runs, one module each, found here by the registry (no torch import).

A family (`mgimm_core.families.base.Family`) states how to recognise a model folder, how to load
it, how a region placed by the geo core reaches its model, its prompt format, its default chip size
and its licence. The describe loop, `model-info`, the worker, the server and (through them) the
plugin ask the registry; no other module tests a family's name. Adding a family is adding a module
here that defines `FAMILY` (or `FAMILIES`), with its tests: nothing else changes.
"""

from __future__ import annotations

from typing import Any
import importlib
import pkgutil
from functools import lru_cache
from pathlib import Path

from mgimm_core.errors import ModelError
from mgimm_core.families.base import Family

_NOT_FAMILIES = {"base", "regions", "marks"}


@lru_cache(maxsize=None)
def all_families() -> tuple[Family, ...]:
    """Every family, in detection order."""
    found: list[Family] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name in _NOT_FAMILIES or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(module, "FAMILIES", ()) or ([module.FAMILY] if hasattr(module, "FAMILY") else []))
    return tuple(sorted(found, key=lambda f: (f.order, f.name)))


def family(name: str) -> Family:
    """The family called `name` (ModelError naming the known ones otherwise)."""
    for candidate in all_families():
        if candidate.name == name:
            return candidate
    raise ModelError(f"model family {name!r} is not known; known families: "
                     f"{', '.join(f.name for f in all_families())}")


def for_served_id(served_id: str) -> Family | None:
    """The one family whose served-id patterns match an endpoint's model id; None when none or
    several do (the caller asks for --family)."""
    matches = [candidate for candidate in all_families() if candidate.serves(served_id)]
    return matches[0] if len(matches) == 1 else None


def detect(config: dict[str, Any], directory: Path) -> Family:
    """The family of the folder whose config.json is `config`."""
    for candidate in all_families():
        if candidate.recognise(config, directory):
            return candidate
    model_type = config.get("model_type")
    raise ModelError(f"{directory}: config.json has model_type {model_type!r}, which mgimm-geo cannot run; it runs "
                     f"{', '.join(f.title for f in all_families())} folders (docs/models.md)")
