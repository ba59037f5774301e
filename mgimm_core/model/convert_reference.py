"""Import checkpoints trained with the reference code (a LLaVA-1.5 derivative) into an MGIMM model.

Inputs, all read with `torch.load(weights_only=True)` or safetensors (never pickled code):
  stage 1: `mm_prompt_projector.bin`: projector + box prompt encoder + region transformer;
  stage 2: `non_lora_trainables.bin` (the parts trained in full: projector, prompt encoder, region
           transformer, their PEFT-wrapped weights named `...q_proj.base_layer.weight`) and a PEFT
           adapter dir (`adapter_config.json`, `adapter_model.safetensors|.bin`) whose LoRA pairs sit
           on the LM's linear layers and on the region transformer's (q/k/v/out_proj, lin1, lin2).
Every weight ends as W = base + LoRA delta: the base is stage 1 overwritten by non_lora_trainables,
the delta is merged last. Key names are the reference's (`model.mm_projector.0.weight`,
`model.prompt_encoder.*`, `model.region_interactive_layer.*`; tests/data/reference_stage1_keys.json).
Build the model with `reference_region_settings()` (configuration_mgimm.py), which reproduces the
reference's box numerics; `import_reference` does it all and writes a model directory.
Nothing here runs code from a checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mgimm_core.errors import IncompleteImportError, ModelError, OutputError
from mgimm_core.model_formats import open_weight_permissions

if TYPE_CHECKING:
    from .modeling_mgimm import MGIMMForConditionalGeneration

PROMPT_ENCODER_PREFIXES = ("prompt_encoder",)
REGION_TRANSFORMER_PREFIXES = ("region_interactive_layer",)
# SAM prompt-encoder parts the box-only reference never feeds (points, masks): skipped on import.
UNUSED_PROMPT_PARTS = ("point_embeddings.0.", "point_embeddings.1.", "not_a_point_embed.", "no_mask_embed.",
                       "mask_downscaling.")
UNUSED_REASON = "SAM prompt part unused by box prompts (points, mask prompt)"
# SAM two-way transformer names -> names in RegionInteractiveModule.
TRANSFORMER_RENAMES = (
    (".mlp.lin1.", ".mlp.0."), (".mlp.lin2.", ".mlp.2."),
    ("final_attn_token_to_image.", "final_attn."), ("norm_final_attn.", "norm_final."),
)
#: Written by import_reference beside the model: where the weights came from and what was imported.
REFERENCE_IMPORT_FILE = "reference_import.json"
#: Model parts that only a checkpoint can provide: an import that leaves one fresh is incomplete.
TRAINED_PARTS = ("region_module.", "projector.")
# A PEFT LoRA tensor: <module>.lora_A|lora_B[.<adapter name>].weight
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<half>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


@dataclass
class ImportReport:
    """What an import did: model keys written (`loaded`, each once), checkpoint keys skipped (with
    why), model keys of the region module / projector that no checkpoint provided (`not_provided`:
    they keep their fresh values; only with partial=True), model weights a LoRA delta was added to."""

    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    not_provided: list[str] = field(default_factory=list)
    merged_lora: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts and names for a short report (the CLI's JSON)."""
        reasons: dict[str, int] = {}
        for reason in self.skipped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        return {"loaded": len(self.loaded), "merged_lora": len(self.merged_lora), "skipped": len(self.skipped),
                "skipped_reasons": reasons, "not_provided": list(self.not_provided)}


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
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
    """Drop PEFT / DeepSpeed wrappers so keys read like LLaVA's (`model.mm_projector.0.weight`):
    `module.`, `base_model.model.` and the `.base_layer` a LoRA-wrapped linear layer's own weight has."""
    for prefix in ("module.", "base_model.model."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key.replace(".base_layer.", ".")


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
                return None, UNUSED_REASON
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


def _mark_loaded(report: ImportReport, target: str) -> None:
    if target not in report.loaded:
        report.loaded.append(target)


def import_state_dict(model: torch.nn.Module, reference_state: dict[str, torch.Tensor], report: ImportReport,
                      strict: bool = True) -> None:
    """Copy mapped tensors into `model` (shapes must match; dtype follows the model). strict: a key
    that maps to a tensor this model lacks raises (else it is reported as skipped)."""
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
                                 "build it with reference_region_settings() (region tokens, depth)")
            report.skipped[key] = f"maps to missing {target}"
            continue
        updates[target] = tensor
    for target, tensor in updates.items():
        if tuple(params[target].shape) != tuple(tensor.shape):
            raise ModelError(f"{target}: checkpoint shape {tuple(tensor.shape)} != model shape "
                             f"{tuple(params[target].shape)}; build the model with the reference sizes")
        with torch.no_grad():
            params[target].copy_(tensor.to(params[target].dtype))
        _mark_loaded(report, target)


def _pattern_value(patterns: dict[str, Any] | None, module: str, default: Any) -> Any:   # adapter JSON values
    """PEFT's rank_pattern / alpha_pattern rule: the first pattern that matches the end of the
    module name (`(.*\\.)?pattern$`, a regular expression) gives the value."""
    for pattern, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def lora_delta(adapter: dict[str, Any], module: str, lora_a: torch.Tensor, lora_b: torch.Tensor) -> torch.Tensor:
    """The weight change of one LoRA pair, in fp32: scale * B @ A (transposed for fan_in_fan_out
    layers, which store their weight as in x out). r is A's row count (so rank_pattern needs no
    lookup); alpha comes from alpha_pattern or lora_alpha; scale = alpha / r, or alpha / sqrt(r)
    with use_rslora. `module` is the PEFT module name (`model.layers.0.self_attn.q_proj`)."""
    rank = lora_a.shape[0]
    if lora_b.shape[1] != rank:
        raise ModelError(f"{module}: LoRA A has rank {rank} but B has {lora_b.shape[1]} columns; "
                         "the adapter is damaged")
    alpha = _pattern_value(adapter.get("alpha_pattern"), module, adapter.get("lora_alpha", 8))
    scale = alpha / math.sqrt(rank) if adapter.get("use_rslora") else alpha / rank
    delta: torch.Tensor = (lora_b.float() @ lora_a.float()) * scale
    return delta.T if adapter.get("fan_in_fan_out") else delta


def _read_adapter(adapter_dir: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(adapter_config.json, tensors) of a PEFT LoRA adapter dir; refuses what cannot be merged
    into plain weights by adding B @ A (DoRA, other PEFT methods, LoRA on embeddings)."""
    config_path = os.path.join(adapter_dir, "adapter_config.json")
    if not os.path.isfile(config_path):
        raise ModelError(f"{adapter_dir}: no adapter_config.json; give the stage-2 PEFT output directory")
    with open(config_path, encoding="utf-8") as fh:
        adapter = json.load(fh)
    if adapter.get("peft_type", "LORA") != "LORA":
        raise ModelError(f"{adapter_dir}: a {adapter['peft_type']} adapter; only LoRA adapters can be imported")
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if os.path.isfile(os.path.join(adapter_dir, name)):
            state = load_state_dict(os.path.join(adapter_dir, name))
            break
    else:
        raise ModelError(f"{adapter_dir}: no adapter_model.safetensors or adapter_model.bin")
    if adapter.get("use_dora") or any(".lora_magnitude_vector" in k for k in state):
        raise ModelError(f"{adapter_dir}: a DoRA adapter (use_dora): its merged weight is not base + B @ A, "
                         "so it cannot be imported; merge it in the reference environment with peft's "
                         "merge_and_unload() and import the merged weights instead")
    unsupported = [k for k in state if ".lora_" in k and not _LORA_KEY.match(k)]
    if unsupported:
        raise ModelError(f"{adapter_dir}: LoRA tensors this import cannot merge ({', '.join(unsupported[:3])}): "
                         "only lora_A / lora_B weights of linear layers are supported")
    return adapter, state


def merge_peft_adapter(model: torch.nn.Module, adapter_dir: str | os.PathLike[str], report: ImportReport,
                       strict: bool = True) -> None:
    """Add the delta of every LoRA pair of a PEFT adapter dir to the model weight it belongs to
    (language model or region transformer; see lora_delta). Other tensors in the adapter (biases,
    modules saved in full) are imported as they are, before the deltas. strict: a LoRA pair with
    no counterpart in the model raises (else it is reported as skipped)."""
    adapter_dir = os.fspath(adapter_dir)
    adapter, state = _read_adapter(adapter_dir)
    import_state_dict(model, {k: v for k, v in state.items() if not _LORA_KEY.match(k)}, report, strict)
    params = dict(model.state_dict())
    pairs = [(key, match) for key in sorted(state) if (match := _LORA_KEY.match(key)) and match.group("half") == "A"]
    for key_a, match in pairs:
        adapter_name = f".{match.group('adapter')}" if match.group("adapter") else ""
        key_b = f"{match.group('module')}.lora_B{adapter_name}.weight"
        if key_b not in state:
            raise ModelError(f"{adapter_dir}: {key_a} has no matching {key_b}; the adapter is damaged")
        module = _strip_wrappers(match.group("module"))
        target, reason = map_reference_key(module + ".weight")
        if target is None or target not in params:
            why = reason if target is None else f"maps to missing {target}"
            if strict:
                raise ModelError(f"{adapter_dir}: LoRA pair on {module} cannot be merged ({why})")
            report.skipped[key_a] = f"LoRA pair not merged: {why}"
            continue
        delta = lora_delta(adapter, module, state[key_a], state[key_b])
        weight = params[target]
        if delta.shape != weight.shape:
            raise ModelError(f"{key_a}: LoRA delta {tuple(delta.shape)} does not fit {target} {tuple(weight.shape)}"
                             + ("" if adapter.get("fan_in_fan_out") else "; is the adapter fan_in_fan_out?"))
        with torch.no_grad():
            weight.copy_((weight.float() + delta).to(weight.dtype))
        report.merged_lora.append(target)


def convert_reference(model: MGIMMForConditionalGeneration, stage1: str | os.PathLike[str] | None = None,
                      adapter_dir: str | os.PathLike[str] | None = None,
                      non_lora_trainables: str | os.PathLike[str] | None = None, strict: bool = True,
                      partial: bool = False) -> ImportReport:
    """Load reference checkpoints into an MGIMMForConditionalGeneration built with matching sizes
    (from_components(CLIP-L/336, the LLM, **reference_region_settings())).

    Order: stage 1, then non_lora_trainables (stage 2's full weights, which win), then the adapter's
    LoRA deltas are added, so every weight is base + delta. strict: a checkpoint tensor that maps to
    a tensor this model lacks raises ModelError. Unless `partial`, raises IncompleteImportError
    naming every region-module / projector tensor no checkpoint provided; with `partial` they are
    listed in the report's not_provided (and keep their fresh values)."""
    if model.config.use_lora:
        raise ModelError("merge_lora(model) first: imported adapters are merged into plain LM weights")
    if not (stage1 or adapter_dir or non_lora_trainables):
        raise ModelError("nothing to import: give a stage-1 file, a stage-2 adapter dir or non_lora_trainables")
    report = ImportReport()
    if stage1:
        import_state_dict(model, load_state_dict(stage1), report, strict)
    if non_lora_trainables:
        import_state_dict(model, load_state_dict(non_lora_trainables), report, strict)
    if adapter_dir:
        merge_peft_adapter(model, adapter_dir, report, strict)
    report.not_provided = [k for k in model.state_dict() if k.startswith(TRAINED_PARTS) and k not in report.loaded]
    if report.not_provided and not partial:
        shown = ", ".join(report.not_provided[:12])
        more = f" ... ({len(report.not_provided)} in all)" if len(report.not_provided) > 12 else ""
        raise IncompleteImportError(
            f"the checkpoints do not provide {len(report.not_provided)} trained tensor(s) of the region module / "
            f"projector: {shown}{more}. Give the missing file (stage 1 mm_prompt_projector.bin, or stage 2's "
            "non_lora_trainables.bin), or import partially (partial=True, CLI --partial) to keep them fresh",
            missing=report.not_provided)
    return report


def import_reference(output: str | os.PathLike[str], vision: str | os.PathLike[str], llm: str | os.PathLike[str],
                     stage1: str | os.PathLike[str] | None = None, adapter_dir: str | os.PathLike[str] | None = None,
                     non_lora_trainables: str | os.PathLike[str] | None = None, partial: bool = False,
                     overwrite: bool = False, dtype: torch.dtype = torch.bfloat16) -> ImportReport:
    """Build an MGIMM with the reference's layout from local vision and LLM directories
    (`from_components(..., **reference_region_settings())`), import the reference checkpoints
    (convert_reference) and save a normal MGIMM directory at `output` (save_pretrained: config.json,
    model.safetensors; the processor and tokenizer files; `reference_import.json`, what was imported).
    LoRA deltas are merged in fp32 and stored in `dtype`. Nothing is written when the import fails;
    an `output` that is not empty needs overwrite=True (OutputError)."""
    from transformers import AutoTokenizer

    from .configuration_mgimm import reference_region_settings
    from .modeling_mgimm import MGIMMForConditionalGeneration
    from .processing_mgimm import MGIMMProcessor

    output = os.fspath(output)
    if os.path.exists(output) and not os.path.isdir(output):
        raise OutputError(f"{output} is a file; give a directory to write the model into")
    if os.path.isdir(output) and os.listdir(output) and not overwrite:
        raise OutputError(f"{output} is not empty; choose another directory or overwrite it (CLI --overwrite)")
    model = MGIMMForConditionalGeneration.from_components(vision, llm, dtype=dtype, **reference_region_settings())
    report = convert_reference(model, stage1, adapter_dir, non_lora_trainables, partial=partial)
    try:
        tokenizer = AutoTokenizer.from_pretrained(os.fspath(llm))  # a local dir; no remote code
    except (OSError, ValueError) as exc:
        raise ModelError(f"{llm}: no usable tokenizer ({exc}); the LLM directory needs its tokenizer files") from exc
    processor = MGIMMProcessor.from_config(model.config, tokenizer)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    open_weight_permissions(output)
    sources = {"stage1": stage1, "adapter": adapter_dir, "non_lora_trainables": non_lora_trainables,
               "vision": vision, "llm": llm}
    record = {"format": "mgimm-reference-import",
              "sources": {k: os.path.abspath(os.fspath(v)) for k, v in sources.items() if v},
              "dtype": str(dtype).removeprefix("torch."), **report.summary()}
    with open(os.path.join(output, REFERENCE_IMPORT_FILE), "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2)
    return report
