"""What the tiny checkpoint writers (mgimm_core/model/testing_*.py) share: random weights that every part
of a model answers to, and JSON files written as save_pretrained writes them. For tests and benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import torch

_Module = TypeVar("_Module", bound=torch.nn.Module)


def randomise_(model: _Module, scale: float = 0.2) -> _Module:
    """Every tensor of `model` drawn from torch's global generator (seed it first): matrices N(0, scale),
    vectors (norms, biases) U(-scale, scale); default inits leave some parts at zero or one, so that
    those parts would not move the logits. Returns the model."""
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, scale) if param.dim() > 1 else param.uniform_(-scale, scale)
    return model


def write_json(path: Path, data: dict[str, Any]) -> None:
    """`data` as an indented JSON file (a model folder's config files)."""
    path.write_text(json.dumps(data, indent=2))
