"""Import checkpoints trained with the reference code (a LLaVA-1.5 derivative) into an MGIMM model.

Inputs, all read with `torch.load(weights_only=True)` or safetensors (never pickled code):
  stage 1: `mm_prompt_projector.bin`: projector + box prompt encoder + region transformer;
  stage 2: a PEFT adapter dir (`adapter_config.json`, `adapter_model.safetensors|.bin`), merged
           into the LM weights here, and `non_lora_trainables.bin` (projector, region parts, ...).
The key names follow LLaVA (`model.mm_projector.0.weight`) and SAM (`prompt_encoder.pe_layer...`,
`layers.0.cross_attn_token_to_image.q_proj.weight`); the reference's own module prefixes for the
prompt encoder and region transformer are unconfirmed without the real files, so several
candidates are accepted (see docs/model.md). Nothing here runs code from a checkpoint.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import torch

from mgimm_core.errors import ModelError

PROMPT_ENCODER_PREFIXES = ("prompt_encoder", "region_prompt_encoder", "box_encoder", "mm_prompt_encoder")
REGION_TRANSFORMER_PREFIXES = (
    "region_interactive_module", "region_transformer", "two_way_transformer", "mm_region_module", "rim",
)
# SAM prompt-encoder parts the box-only reference never feeds (points, masks): skipped on import.
UNUSED_PROMPT_PARTS = ("point_embeddings.0.", "point_embeddings.1.", "not_a_point_embed.", "no_mask_embed.",
                       "mask_downscaling.")
# SAM two-way transformer names -> names in RegionInteractiveModule.
TRANSFORMER_RENAMES = (
    (".mlp.lin1.", ".mlp.0."), (".mlp.lin2.", ".mlp.2."),
    ("final_attn_token_to_image.", "final_attn."), ("norm_final_attn.", "norm_final."),
)


@dataclass
class ImportReport:
    """What an import did: model keys written, checkpoint keys skipped (with why), model keys of
    the region module / projector that no checkpoint provided (they keep their fresh values)."""

    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    not_provided: list[str] = field(default_factory=list)
    merged_lora: list[str] = field(default_factory=list)


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch file read with weights_only=True."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelError(f"{path}: checkpoint file not found")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused or corrupt: say which file
        raise ModelError(f"{path}: not a plain tensor checkpoint ({exc}); re-save it as tensors only") from exc
    if not isinstance(state, dict):
        raise ModelError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
    return state


def _strip_wrappers(key: str) -> str:
    """Drop PEFT / DeepSpeed wrappers so keys read like LLaVA's (`model.mm_projector.0.weight`)."""
    for prefix in ("module.", "base_model.model."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def map_reference_key(key: str) -> tuple[str | None, str]:
    """Reference key -> (MGIMM key or None, reason when None). Corner embeddings are handled
    by the caller (two reference tensors make one of ours)."""
    key = _strip_wrappers(key)
    inner = key[len("model."):] if key.startswith("model.") else key
    projector = re.match(r"mm_projector\.(0|2)\.(weight|bias)$", inner)
    if projector:
        return f"projector.linear_{1 if projector.group(1) == '0' else 2}.{projector.group(2)}", ""
    for prefix in PROMPT_ENCODER_PREFIXES:
        if inner.startswith(prefix + "."):
            rest = inner[len(prefix) + 1:]
            if rest == "pe_layer.positional_encoding_gaussian_matrix":
                return "region_module.pe.gaussian", ""
            if rest.startswith(UNUSED_PROMPT_PARTS):
                return None, "SAM prompt part unused by box prompts"
            return None, "unknown prompt-encoder part"
    for prefix in REGION_TRANSFORMER_PREFIXES:
        if inner.startswith(prefix + "."):
            rest = "." + inner[len(prefix) + 1:]
            for old, new in TRANSFORMER_RENAMES:
                rest = rest.replace(old, new)
            return "region_module" + rest, ""
    if inner.startswith("vision_tower.vision_tower."):
        return "vision_tower." + inner[len("vision_tower.vision_tower."):], ""
    if key.startswith("model.") and inner.startswith(("layers.", "embed_tokens.", "norm.")):
        return "language_model." + key, ""
    if key.startswith("lm_head."):
        return "language_model." + key, ""
    return None, "no MGIMM counterpart"


def _corner_embedding(state: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """SAM's box corners use point_embeddings.2 (top-left) and .3 (bottom-right): stack them."""
    for prefix in PROMPT_ENCODER_PREFIXES:
        for lead in ("model.", ""):
            a, b = (f"{lead}{prefix}.point_embeddings.{i}.weight" for i in (2, 3))
            if a in state and b in state:
                return torch.cat([state[a].reshape(1, -1), state[b].reshape(1, -1)])
    return None


def import_state_dict(model, reference_state: dict[str, torch.Tensor], report: ImportReport,
                      strict: bool = True) -> None:
    """Copy mapped tensors into `model` (shapes must match; dtype follows the model)."""
    params = dict(model.state_dict())
    state = {_strip_wrappers(k): v for k, v in reference_state.items()}
    corners = _corner_embedding(state)
    updates: dict[str, torch.Tensor] = {}
    if corners is not None and "region_module.corner_embed.weight" in params:
        updates["region_module.corner_embed.weight"] = corners
    for key, tensor in state.items():
        if re.search(r"point_embeddings\.[23]\.weight$", key):
            continue
        target, reason = map_reference_key(key)
        if target is not None and target not in params and target.startswith("vision_tower.vision_model."):
            target = "vision_tower." + target[len("vision_tower.vision_model."):]  # transformers 5 layout
        if target is None:
            report.skipped[key] = reason
            continue
        if target not in params:
            if strict:
                raise ModelError(f"checkpoint key {key} maps to {target}, which this model lacks: "
                                 "check region_tokens / region_depth in the config")
            report.skipped[key] = f"maps to missing {target}"
            continue
        updates[target] = tensor
    for target, tensor in updates.items():
        if tuple(params[target].shape) != tuple(tensor.shape):
            raise ModelError(f"{target}: checkpoint shape {tuple(tensor.shape)} != model shape "
                             f"{tuple(params[target].shape)}; build the model with the reference sizes")
        with torch.no_grad():
            params[target].copy_(tensor.to(params[target].dtype))
        report.loaded.append(target)


def merge_peft_adapter(model, adapter_dir: str | os.PathLike, report: ImportReport) -> None:
    """Add scale * B @ A of every LoRA pair in a PEFT adapter dir to the matching LM weight."""
    adapter_dir = os.fspath(adapter_dir)
    config_path = os.path.join(adapter_dir, "adapter_config.json")
    if not os.path.isfile(config_path):
        raise ModelError(f"{adapter_dir}: no adapter_config.json; give the stage-2 PEFT output directory")
    with open(config_path, encoding="utf-8") as fh:
        adapter = json.load(fh)
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if os.path.isfile(os.path.join(adapter_dir, name)):
            state = load_state_dict(os.path.join(adapter_dir, name))
            break
    else:
        raise ModelError(f"{adapter_dir}: no adapter_model.safetensors or adapter_model.bin")
    scale = adapter["lora_alpha"] / adapter["r"]
    params = dict(model.state_dict())
    for key_a in [k for k in state if ".lora_A." in k]:
        key_b = key_a.replace(".lora_A.", ".lora_B.")
        base = re.sub(r"\.lora_A\.(default\.)?weight$", ".weight", _strip_wrappers(key_a))
        target = "language_model." + base
        if not base.startswith("model.layers.") or target not in params:
            report.skipped[key_a] = "LoRA on a module outside the language model"
            continue
        delta = state[key_b].float() @ state[key_a].float() * scale
        if delta.shape != params[target].shape:
            raise ModelError(f"{key_a}: LoRA delta {tuple(delta.shape)} does not fit {target}")
        with torch.no_grad():
            params[target].add_(delta.to(params[target].dtype))
        report.merged_lora.append(target)


def convert_reference(model, stage1: str | None = None, adapter_dir: str | None = None,
                      non_lora_trainables: str | None = None, strict: bool = True) -> ImportReport:
    """Load reference checkpoints into an MGIMMForConditionalGeneration built with matching sizes
    (e.g. from_components(CLIP-L/336, Vicuna-7B) with the default region settings).
    Order: stage 1, then the stage-2 adapter (merged), then non_lora_trainables (which win)."""
    if model.config.use_lora:
        raise ModelError("merge_lora(model) first: imported adapters are merged into plain LM weights")
    report = ImportReport()
    if stage1:
        import_state_dict(model, load_state_dict(stage1), report, strict)
    if adapter_dir:
        merge_peft_adapter(model, adapter_dir, report)
    if non_lora_trainables:
        import_state_dict(model, load_state_dict(non_lora_trainables), report, strict)
    trained_parts = ("region_module.", "projector.")
    report.not_provided = [k for k in model.state_dict() if k.startswith(trained_parts) and k not in report.loaded]
    return report
