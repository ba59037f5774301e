"""Inference helpers: load a model for generation, and one text per region of a chip."""

from __future__ import annotations

import os

import numpy as np
import torch

from .lora_mgimm import merge_lora
from .modeling_mgimm import MGIMMForConditionalGeneration
from .processing_mgimm import MGIMMProcessor


def inference_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA (halves weight traffic, the decode bottleneck), fp32 on CPU."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def load_for_inference(directory: str | os.PathLike, device: str | None = None,
                       vision: str | os.PathLike | None = None):
    """(model, processor) from a directory holding both; LoRA merged, eval mode, bf16 on CUDA.
    LLaVA-1.5-family directories (mgimm_core/model_formats.py) load as global-only models; `vision`
    is the local vision tower of an original-format one."""
    from mgimm_core.model_formats import MGIMM, inspect_model

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = inference_dtype(device)
    if inspect_model(directory, vision).format != MGIMM:
        from .llava_mgimm import load_llava

        return load_llava(directory, vision=vision, dtype=dtype, device=device)
    try:  # fused scaled-dot-product attention in the LM and the vision tower (the default where supported)
        model = MGIMMForConditionalGeneration.from_pretrained(directory, dtype=dtype, attn_implementation="sdpa")
    except ValueError:  # an encoder or LM without an SDPA path: its own attention
        model = MGIMMForConditionalGeneration.from_pretrained(directory, dtype=dtype)
    merge_lora(model)
    return model.to(device).eval(), MGIMMProcessor.from_pretrained(directory)


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
