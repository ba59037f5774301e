"""What a model directory holds, for `mgimm-geo model-info` and the worker/server `hello`.

Read from the directory's files: its family (mgimm_core/families), tensor shapes from the
safetensors headers (no weights read; `.bin` shards are memory-mapped with weights_only), and
its card `model_card.json` when there is one (mgimm_core/model_card.py: the imagery a model was
trained on).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from mgimm_core.errors import ModelError
from mgimm_core.model_card import read_card
from mgimm_core.model_dir import ModelDirectory
from mgimm_core.model_formats import read_json, weight_files

_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
          "F8_E4M3": 1, "F8_E5M2": 1}


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The tensor table at the head of a safetensors file (ModelError when it is not one)."""
    damaged = f"{path}: not a readable safetensors file"
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ModelError(f"{damaged} (shorter than its header); copy or export the model again")
            (length,) = struct.unpack("<Q", prefix)
            if length > size - 8:
                raise ModelError(f"{damaged} (its header claims {length} bytes of {size}); copy or export the "
                                 "model again")
            header = json.loads(handle.read(length))
    except OSError as exc:
        raise ModelError(f"{damaged} ({exc})") from exc
    except ValueError as exc:
        raise ModelError(f"{damaged} (its header is not JSON: {exc}); copy or export the model again") from exc
    if not isinstance(header, dict) or not all(isinstance(v, dict) and isinstance(v.get("shape", []), list)
                                               for k, v in header.items() if k != "__metadata__"):
        raise ModelError(f"{damaged} (its header is not a tensor table); copy or export the model again")
    header.pop("__metadata__", None)
    return header


def tensor_stats(files: list[Path]) -> tuple[int, dict[str, int]]:
    """(parameter count, {dtype: count}) of weight files, without reading the weights."""
    total = 0
    dtypes: dict[str, int] = {}
    for path in files:
        if path.suffix == ".safetensors":
            shapes = [(entry["dtype"], entry["shape"]) for entry in _safetensors_header(path).values()]
        else:

            state = _torch_state(path)
            shapes = [(str(t.dtype).replace("torch.", ""), list(t.shape)) for t in state.values()]
        for dtype, shape in shapes:
            count = math.prod(shape)
            total += count
            dtypes[dtype] = dtypes.get(dtype, 0) + count
    return total, dtypes


def _torch_state(path: Path) -> dict[str, Any]:
    """A `.bin` checkpoint's tensors, memory-mapped and never unpickling code (ModelError otherwise)."""
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"{path}: holds pickled Python objects, not only tensors, and mgimm-geo never unpickles "
                         f"code; convert it to safetensors where you trust the file, or use the model's "
                         f"safetensors release") from exc
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise ModelError(f"{path}: not a readable PyTorch checkpoint ({exc}); copy or export the model again") from exc
    if not isinstance(state, dict):
        raise ModelError(f"{path}: holds no tensor table; copy or export the model again")
    return state


def model_info(model_dir: str | Path | ModelDirectory | None = None,
               vision: str | Path | None = None) -> dict[str, Any]:
    """JSON-ready facts about a model directory (default: the demo model)."""
    model = ModelDirectory.resolve(model_dir, vision)
    kind, family = model.kind, model.family
    files = weight_files(model.path)
    if model.vision_dir is not None:
        files += weight_files(model.vision_dir)
    parameters, dtypes = tensor_stats(files)
    card = read_card(model.path)
    licence = family.licence(kind)
    if card.get("licence") or card.get("license"):
        licence = type(licence)(str(card.get("licence") or card.get("license")),
                                bool(card.get("non_commercial", licence.non_commercial)))
    convention = family.region_convention()
    return {
        "path": str(model.path), "model": model.model_id, "family": family.name, "format": family.name,
        "kind": family.title, "source": family.source(kind),
        "vision_dir": str(model.vision_dir) if model.vision_dir else None,
        "parameters": parameters, "stored_dtypes": dtypes,
        "memory_bytes": {"bf16": parameters * 2, "fp32": parameters * 4},
        "region_method": family.region_method(kind), "region_as": family.region_as,
        "region_ways": list(family.region_ways()),
        "region_convention": convention.name if convention is not None else None,
        "region_tokens": list(kind.config.get("region_tokens", [])) if family.region_as == "tokens" else [],
        "prompt_template": family.prompt_template(kind),
        "input_size": model.chip.input_size, "chip_context": model.chip.context,
        "chip_min_window": model.chip.min_window, "default_batch_size": model.default_batch_size,
        "licence": licence.name, "non_commercial": licence.non_commercial,
        "licence_warning": licence.warning(model.model_id),
        "trained_on": card or None,
    }


def known_words(model_dir: str | Path | ModelDirectory | None = None) -> list[str] | None:
    """The words a word-level tokenizer knows (the demo model's), from tokenizer.json without
    loading anything; None for tokenizers that encode any text (BPE, SentencePiece)."""
    model = ModelDirectory.resolve(model_dir)
    path = model.path / "tokenizer.json"
    if not path.is_file():
        return None
    spec = read_json(path).get("model", {})
    if spec.get("type") != "WordLevel":
        return None
    return sorted(word for word in spec.get("vocab", {}) if not (word.startswith("<") and word.endswith(">")))
