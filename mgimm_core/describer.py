"""A loaded MGIMM model that answers, for region chips, an attribute phrase and a description.

This is the one place the pipeline touches torch: it resolves the device and dtype, loads weights
(safetensors, never remote code), and runs batched greedy generation for the two questions the model
was trained on (`mgimm_core.prompts`).
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mgimm_core.errors import ModelError
from mgimm_core.prompts import ATTRIBUTE_PROMPT, DESCRIPTION_PROMPT, TEXT_REGION_PROMPTS
from mgimm_core.vocabulary import parse_attributes

log = logging.getLogger(__name__)

DEMO_MODEL_DIR = Path(__file__).parent / "demo_model"


@dataclass
class RegionText:
    """What the model said about one region."""

    description: str | None = None
    attribute_text: str | None = None
    attributes: dict = field(default_factory=dict)


def resolve_device(device: str = "auto"):
    """"auto" -> CUDA when available, else CPU; "cpu", "cuda", "cuda:N" as given (checked)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"device {device!r} is not understood ({exc}); use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device {device!r} asked for, but torch sees no CUDA device; use --device cpu "
                             "or install a CUDA build of torch")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ModelError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return resolved


class Describer:
    """Model + processor on one device; `describe` answers a batch of region chips."""

    def __init__(self, model, processor, model_id: str, device, *, max_new_tokens: int = 200,
                 model_dir: Path | None = None, compile: bool = False):
        self.model = model
        # Static KV cache: fixed-shape decode steps, which transformers compiles (torch.compile of
        # the forward) on CUDA; on CPU it only preallocates the cache (same tokens, no compile).
        self.generate_options = {"cache_implementation": "static"} if compile else {}
        self.model_dir = model_dir
        self.processor = processor
        self.model_id = model_id
        self.device = device
        self.max_new_tokens = max_new_tokens

    @classmethod
    def load(cls, model_dir: str | Path | None = None, *, device: str = "auto",
             max_new_tokens: int = 200, compile: bool = False, vision: str | Path | None = None) -> "Describer":
        """Load a saved MGIMM directory (default: the demo model shipped inside the package).

        compile: decode with a static KV cache and a compiled forward (CUDA; first batch of
        each shape pays the compile time, later ones decode faster); greedy tokens are the same.
        vision: the local vision-tower directory of an original-format LLaVA/GeoChat checkpoint
        (default: its `mm_vision_tower`, as a path or in the Hugging Face cache).
        """
        from mgimm_core.model import load_for_inference

        directory = Path(model_dir) if model_dir is not None else DEMO_MODEL_DIR
        if not (directory / "config.json").is_file():
            hint = ("the embedded demo model is missing from this installation; reinstall mgimm-geo"
                    if model_dir is None else "give a directory written by save_pretrained / "
                    "`python -m training` (it holds config.json, model.safetensors and the tokenizer)")
            raise ModelError(f"{directory}: no MGIMM model here ({hint})")
        torch_device = resolve_device(device)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # stdout/stderr stay for our own progress and JSON
        try:
            model, processor = load_for_inference(str(directory), device=str(torch_device), vision=vision)
        except pickle.UnpicklingError as exc:       # torch.load(weights_only=True) refused a pickled object
            raise ModelError(f"{directory}: its .bin weights hold pickled Python objects, not only tensors, "
                             f"and mgimm-geo never unpickles code (torch.load with weights_only=True refused "
                             f"them). Convert them to safetensors where you trust the file "
                             f"(safetensors.torch.save_file), or use the model's safetensors release.") from exc
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{directory}: cannot load the model ({exc})") from exc
        model_id = "demo" if model_dir is None else directory.name
        return cls(model, processor, model_id, torch_device, max_new_tokens=max_new_tokens,
                   model_dir=directory, compile=compile)

    @property
    def chip_size(self) -> int:
        """Model input side in pixels: the geo core reads larger regions decimated to this."""
        return int(self.processor.image_size)

    def _generate(self, images, boxes, masks, prompt: str, mode: str, patches=None):
        """(texts, patches): one answer per chip; `patches` are the chips' vision features, computed
        here unless given (the second question about the same chips reuses the first's)."""
        import torch

        batch = self.processor(images, boxes=[np.asarray([b], dtype=np.float32) for b in boxes],
                               masks=[[m] for m in masks], prompts=prompt, mode=mode)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        pixel_values = batch.pop("pixel_values", None)
        if patches is None and pixel_values is not None:
            with torch.inference_mode():
                patches = self.model.patch_features(pixel_values.to(self.model.dtype))
        ids = self.model.generate(**batch, patches=patches, mode=mode, max_new_tokens=self.max_new_tokens,
                                  **self.generate_options)
        return self.processor.batch_decode(ids), patches

    def describe(self, images: list[np.ndarray], boxes: list[tuple], masks: list[np.ndarray | None], *,
                 attributes: bool = True, description: bool = True,
                 prompt: str | None = None) -> list[RegionText]:
        """Answer the attribute question (region tokens only, as trained in stage 1) and the
        description question (global + region tokens, stage 2) for each chip; one region each.
        The vision tower runs once per chip for both questions."""
        results = [RegionText() for _ in images]
        if not images:
            return results
        region_prompt = getattr(self.model.config, "region_prompt", "tokens")
        if region_prompt == "tokens":   # MGIMM: region tokens alone, then global + region tokens
            (attribute_prompt, attribute_mode), (description_prompt, description_mode) = (
                (ATTRIBUTE_PROMPT, "region"), (DESCRIPTION_PROMPT, "global_region"))
        else:                           # LLaVA family: the whole chip, the region as box text
            attribute_prompt, description_prompt = TEXT_REGION_PROMPTS[region_prompt]
            attribute_mode = description_mode = "global"
        patches = None
        if attributes:
            texts, patches = self._generate(images, boxes, masks, attribute_prompt, attribute_mode)
            for result, text in zip(results, texts):
                result.attribute_text = text
                result.attributes = {k: v for k, v in parse_attributes(text).items() if v is not None}
        if description:
            texts, _ = self._generate(images, boxes, masks, prompt or description_prompt, description_mode, patches)
            for result, text in zip(results, texts):
                result.description = text
        return results
        patches = None
        if attributes:
            texts, patches = self._generate(images, boxes, masks, ATTRIBUTE_PROMPT, "region")
            for result, text in zip(results, texts):
                result.attribute_text = text
                result.attributes = {k: v for k, v in parse_attributes(text).items() if v is not None}
        if description:
            texts, _ = self._generate(images, boxes, masks, prompt or DESCRIPTION_PROMPT, "global_region", patches)
            for result, text in zip(results, texts):
                result.description = text
        return results
