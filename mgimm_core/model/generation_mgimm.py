"""Loading a model for generation (the describer, mgimm_core/describer.py, runs it)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .modeling_mgimm import MGIMMForConditionalGeneration
    from .processing_mgimm import MGIMMProcessor


def inference_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA (halves weight traffic, the decode bottleneck), fp32 on CPU."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def load_for_inference(directory: str | os.PathLike[str], device: str | None = None,
                       vision: str | os.PathLike[str] | None = None
                       ) -> tuple[MGIMMForConditionalGeneration, MGIMMProcessor]:
    """(model, processor) of a folder whose family runs in MGIMM's model class (MGIMM, the LLaVA-1.5
    line: mgimm_core/families); LoRA merged, eval mode, bf16 on CUDA. `vision` is the local vision
    tower of an original-format LLaVA/GeoChat one."""
    from mgimm_core.errors import ModelError
    from mgimm_core.model_formats import inspect_model

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = inspect_model(directory, vision)
    load_model = getattr(kind.family, "load_model", None)
    if load_model is None:
        raise ModelError(f"{directory}: a {kind.family.title} folder runs in its own model class; load it with "
                         "mgimm_core.describer.load_describer")
    loaded: tuple[MGIMMForConditionalGeneration, MGIMMProcessor] = load_model(kind, device, inference_dtype(device))
    return loaded

