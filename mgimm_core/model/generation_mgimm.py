"""Inference helpers: load a model for generation, and one text per region of a chip."""

from __future__ import annotations

import os

import numpy as np
import torch

from .processing_mgimm import MGIMMProcessor


def inference_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA (halves weight traffic, the decode bottleneck), fp32 on CPU."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def load_for_inference(directory: str | os.PathLike, device: str | None = None,
                       vision: str | os.PathLike | None = None):
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
    return load_model(kind, device, inference_dtype(device))


def describe_regions(model, processor: MGIMMProcessor, chip: np.ndarray, boxes, masks=None,
                     prompt: str | None = None, mode: str | None = None, batch_size: int = 16,
                     max_new_tokens: int = 200, stop_strings: list[str] | None = None, **generate_kwargs) -> list[str]:
    """One text per region of `chip` (uint8 H x W x 3): region r is its own sequence with the
    chip's global tokens (mode "global_region") and its own region tokens. boxes (R, 4) in chip
    pixels; masks: R bool (H, W) polygon masks or None entries. Greedy unless do_sample=True."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    masks = list(masks) if masks is not None else [None] * len(boxes)
    device = next(model.parameters()).device
    texts: list[str] = []
    for start in range(0, len(boxes), batch_size):
        stop = min(start + batch_size, len(boxes))
        batch = processor([chip] * (stop - start), boxes=[boxes[i : i + 1] for i in range(start, stop)],
                          masks=[[masks[i]] for i in range(start, stop)], prompts=prompt, mode=mode)
        batch = batch.to(device)
        ids = model.generate(**batch, mode=mode, max_new_tokens=max_new_tokens, stop_strings=stop_strings,
                             tokenizer=processor.tokenizer, **generate_kwargs)
        texts.extend(processor.batch_decode(ids, stop_strings=stop_strings))
    return texts
