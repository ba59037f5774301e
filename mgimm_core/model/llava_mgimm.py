"""LLaVA-1.5-family checkpoints (Hugging Face `llava`, the original LLaVA format, GeoChat) as MGIMM models.

LLaVA is MGIMM without the region module: CLIP patch tokens of the second-to-last layer, a
2-layer GELU projector and a LLaMA LM. So a LLaVA checkpoint loads into
`MGIMMForConditionalGeneration` in mode "global" with no region tokens (`region_tokens=()`), the
region given as box text the way each checkpoint was trained (`MGIMMConfig.region_prompt`); or, by
`from_llava`, with a fresh region module as the starting point of MGIMM's stage 1.

Weights load shard by shard straight into a model built without memory (parameters on the meta
device), each tensor cast to the target dtype and device as it is read, so peak memory stays near
the final model's size (bench/bench_loading.py measures it). Files are safetensors or `.bin`
shards read with `torch.load(weights_only=True)`; nothing from a checkpoint runs as code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import torch
import torch.nn.functional as F

from mgimm_core.errors import ModelError
from mgimm_core.model_formats import inspect_model, read_json, weight_files
from mgimm_core.prompts import DESCRIPTION_PROMPT

from .configuration_mgimm import MGIMMConfig
from .modeling_mgimm import MGIMMForConditionalGeneration
from .processing_mgimm import MGIMMProcessor, encoder_normalisation, ensure_image_token

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, PreTrainedTokenizerBase

    from mgimm_core.families.llava import LlavaFamily
    from mgimm_core.model_formats import ModelKind


@runtime_checkable
class LlavaLayout(Protocol):
    """What this loader reads from a family (mgimm_core/families/llava.py's LlavaFamily has it): the
    tensor layout, the vision input size forced on the tower, and the chat template."""

    hf_layout: bool
    vision_input_size: int | None

    def prompt_template(self, kind: ModelKind) -> str: ...


# Original-format config keys that are LLaVA's, not the LM's.
_LLAVA_ONLY_KEYS = ("image_aspect_ratio", "image_grid_pinpoints", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter",
                    "use_mm_proj", "tokenizer_padding_side", "tokenizer_model_max_length", "architectures")
# Tensors of a full CLIP checkpoint that the vision tower does not use.
_CLIP_UNUSED = ("text_model.", "visual_projection.", "text_projection.", "logit_scale")

Mapper = Callable[[str], "str | None"]


@dataclass
class LoadReport:
    """What a load read: model tensors set, checkpoint tensors skipped (known unused), files read."""

    loaded: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ configs
def _sub_config(data: dict[str, Any], default_type: str) -> PreTrainedConfig:
    from transformers import AutoConfig

    data = dict(data)
    config: PreTrainedConfig = AutoConfig.for_model(data.pop("model_type", default_type), **data)
    return config


def _vision_config(vision_dir: Path, image_size: int | None = None) -> PreTrainedConfig:
    data = read_json(vision_dir / "config.json")
    data = dict(data.get("vision_config") or data)
    data.setdefault("model_type", "clip_vision_model")
    if data["model_type"] == "clip":
        data["model_type"] = "clip_vision_model"
    if image_size is not None:
        data["image_size"] = image_size
    return _sub_config(data, "clip_vision_model")


def _feature_select(strategy: str, directory: Path) -> str:
    if strategy in ("default", "patch"):
        return "patch"
    if strategy in ("full", "cls_patch"):
        return "full"
    raise ModelError(f"{directory}: vision feature selection {strategy!r} is not supported (patch or full)")


def llava_config(directory: Path, kind: ModelKind, tokenizer: PreTrainedTokenizerBase, region_settings: dict[str,
                 Any] | None = None) -> MGIMMConfig:
    """The MGIMMConfig of a LLaVA-family directory: global-only with box-text regions, or (with
    `region_settings`, for from_llava) the MGIMM layout with a region module."""
    config, family = kind.config, cast("LlavaFamily", kind.family)     # a LlavaLayout: load_llava checked it
    if family.hf_layout:
        layer = config.get("vision_feature_layer", -2)
        if not isinstance(layer, int):
            raise ModelError(f"{directory}: vision_feature_layer {layer!r} (several layers) is not supported")
        if config.get("multimodal_projector_bias", True) is not True:
            raise ModelError(f"{directory}: a projector without bias is not supported")
        vision = _sub_config(config["vision_config"], "clip_vision_model")
        text = _sub_config(config["text_config"], "llama")
        settings = dict(vision_feature_layer=layer,
                        vision_feature_select=_feature_select(config.get("vision_feature_select_strategy",
                                                                         "default"), directory),
                        projector_hidden_act=config.get("projector_hidden_act", "gelu"),
                        prompt_template=family.prompt_template(kind), **encoder_normalisation(str(directory)))
    else:
        projector = config.get("mm_projector_type", "linear")
        if projector != "mlp2x_gelu":
            raise ModelError(f"{directory}: mm_projector_type {projector!r}; mgimm-geo runs LLaVA-1.5's "
                             "mlp2x_gelu projector only")
        if config.get("mm_use_im_start_end"):
            raise ModelError(f"{directory}: mm_use_im_start_end is true (image start/end tokens), which "
                             "LLaVA-1.5 and GeoChat do not use; this checkpoint is not supported")
        vision = _vision_config(cast(Path, kind.vision_dir), family.vision_input_size)  # original format: a tower
        if config.get("mm_hidden_size", vision.hidden_size) != vision.hidden_size:
            raise ModelError(f"{directory}: mm_hidden_size {config['mm_hidden_size']} differs from the vision "
                             f"tower's width {vision.hidden_size} in {kind.vision_dir}; give the right --vision")
        text_data = {k: v for k, v in config.items()
                     if not k.startswith("mm_") and k not in _LLAVA_ONLY_KEYS and k != "model_type"}
        text = _sub_config({**text_data, "model_type": "llama"}, "llama")
        settings = dict(vision_feature_layer=config.get("mm_vision_select_layer", -2),
                        vision_feature_select=_feature_select(config.get("mm_vision_select_feature", "patch"),
                                                              directory),
                        projector_hidden_act="gelu", prompt_template=family.prompt_template(kind),
                        **encoder_normalisation(str(kind.vision_dir)))
    image_token_id = config.get("image_token_index", config.get("image_token_id"))
    found = ensure_image_token(tokenizer)
    if image_token_id is None or not family.hf_layout:
        image_token_id = found   # original format: <image> is not a vocabulary token; its id is never embedded
    layout: dict[str, Any] = dict(mode="global", region_tokens=(), region_prompt=family.region_prompt)
    if region_settings is not None:
        layout = dict(mode="global_region", region_prompt="tokens", **region_settings)
    return MGIMMConfig(vision_config=vision, text_config=text, image_size=vision.image_size,
                       image_token_id=image_token_id, source_format=family.name,
                       default_prompt=DESCRIPTION_PROMPT, **layout, **settings)


# ------------------------------------------------------------------ tensor names
def _vision_key(rest: str) -> str:
    return "vision_tower." + (rest[len("vision_model."):] if rest.startswith("vision_model.") else rest)


def hf_key(key: str) -> str | None:
    """llava-hf tensor name (saved legacy names, or transformers 5 module names) -> MGIMM name."""
    for prefix in ("model.language_model.", "language_model.model."):
        if key.startswith(prefix):
            return "language_model.model." + key[len(prefix):]
    if key in ("lm_head.weight", "language_model.lm_head.weight"):
        return "language_model.lm_head.weight"
    match = re.match(r"(?:model\.)?multi_modal_projector\.(linear_[12]\.(?:weight|bias))$", key)
    if match:
        return "projector." + match.group(1)
    for prefix in ("model.vision_tower.", "vision_tower."):
        if key.startswith(prefix):
            return _vision_key(key[len(prefix):])
    return None


def original_key(key: str) -> str | None:
    """Original LLaVA / GeoChat tensor name -> MGIMM name."""
    match = re.match(r"model\.mm_projector\.([02])\.(weight|bias)$", key)
    if match:
        return f"projector.linear_{1 if match.group(1) == '0' else 2}.{match.group(2)}"
    if key.startswith("model.vision_tower.vision_tower."):
        return _vision_key(key[len("model.vision_tower.vision_tower."):])
    if key.startswith("model.") and key.split(".")[1] in ("embed_tokens", "layers", "norm"):
        return "language_model." + key
    if key == "lm_head.weight":
        return "language_model.lm_head.weight"
    return None


def clip_key(key: str) -> str | None:
    """A CLIP (full or vision-only) checkpoint's tensor name -> MGIMM vision-tower name. Hub
    checkpoints say `vision_model.embeddings...`; transformers 5 saves a CLIPVisionModel as
    `embeddings...`."""
    if key.startswith(_CLIP_UNUSED):
        return ""
    return _vision_key(key)


# ------------------------------------------------------------------ reading shards
def iter_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of one weight file, one tensor in memory at a time where the format allows."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)
        return
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:   # an old (non-zip) torch file cannot be memory-mapped
        state = _load_bin(path, mmap=False)
    except Exception as exc:
        raise _pickle_refused(path, exc) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: not a plain dict of tensors; convert it to safetensors (see docs/model.md)")
    yield from state.items()


def _load_bin(path: Path, mmap: bool) -> dict[str, torch.Tensor]:
    try:
        state: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        return state
    except Exception as exc:
        raise _pickle_refused(path, exc) from exc


def _pickle_refused(path: Path, exc: Exception) -> ModelError:
    return ModelError(
        f"{path}: holds more than tensors (a pickle that would run code: {type(exc).__name__}), so it is not "
        f"loaded. Convert it once, where you trust it, to safetensors: python -c \"import torch, safetensors.torch "
        f"as st; st.save_file(torch.load('{path.name}', weights_only=False), '{path.stem}.safetensors')\" "
        f"(see docs/model.md)")


def interpolate_positions(weight: torch.Tensor, grid: int) -> torch.Tensor:
    """CLIP position embeddings (1 + g^2, D) -> (1 + grid^2, D): the class position kept, the patch
    grid resized bicubically with aligned corners (GeoChat's 336 -> 504 px extension)."""
    cls_position, patches = weight[:1], weight[1:]
    side = round(patches.shape[0] ** 0.5)
    if side * side != patches.shape[0]:
        raise ModelError(f"position embeddings of {weight.shape[0]} rows are not 1 + a square grid")
    image = patches.float().T.reshape(1, -1, side, side)
    resized = F.interpolate(image, size=(grid, grid), mode="bicubic", align_corners=True)
    return torch.cat([cls_position.float(), resized.reshape(-1, grid * grid).T]).to(weight.dtype)


def load_weights(model: MGIMMForConditionalGeneration, files: list[Path], mapper: Mapper, dtype: torch.dtype,
                 device: torch.device,
                 report: LoadReport) -> None:
    """Set every mapped tensor of `files` into `model` (parameters may be on the meta device), cast
    to `dtype` on `device` one tensor at a time. `mapper` gives the model name, "" for a known unused
    tensor, None for an unknown one (reported)."""
    from accelerate.utils import set_module_tensor_to_device

    shapes = {name: tuple(t.shape) for name, t in model.state_dict(keep_vars=True).items()}
    for path in files:
        report.files.append(str(path))
        for key, tensor in iter_tensors(path):
            target = mapper(key)
            if target == "":
                report.skipped.append(key)
                continue
            if target is None or target not in shapes:
                report.unknown.append(f"{path.name}: {key}")
                continue
            if tuple(tensor.shape) != shapes[target]:
                if target.endswith("position_embedding.weight"):
                    tensor = interpolate_positions(tensor, model.config.grid_size)
                if tuple(tensor.shape) != shapes[target]:
                    raise ModelError(f"{path}: {key} has shape {tuple(tensor.shape)}, the model expects "
                                     f"{shapes[target]} for {target}")
            set_module_tensor_to_device(model, target, device, value=tensor, dtype=dtype)
            report.loaded.add(target)
            del tensor


def _empty_model(config: MGIMMConfig) -> MGIMMForConditionalGeneration:
    """The model with parameters on the meta device (no memory) and real buffers."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return MGIMMForConditionalGeneration(config)


def _finish(model: MGIMMForConditionalGeneration, report: LoadReport, directory: Path, dtype: torch.dtype,
            device: torch.device,
            fresh: tuple[str, ...] = ()) -> None:
    """Tie or initialise what the checkpoint may lack, then refuse any parameter left unset."""
    from accelerate.utils import set_module_tensor_to_device

    if report.unknown:
        shown = ", ".join(report.unknown[:8]) + (" ..." if len(report.unknown) > 8 else "")
        raise ModelError(f"{directory}: {len(report.unknown)} tensors this loader does not know ({shown}); is it "
                         "a LLaVA-1.5 / GeoChat checkpoint (not LLaVA-NeXT or another variant)?")
    head, embed = "language_model.lm_head.weight", "language_model.model.embed_tokens.weight"
    if head not in report.loaded and embed in report.loaded and model.config.text.tie_word_embeddings:
        model.language_model.tie_weights()
        report.loaded.add(head)
    for prefix in fresh:   # from_llava: a fresh region module, initialised as training expects
        module = model.get_submodule(prefix.rstrip("."))
        for name, param in list(module.named_parameters()):
            set_module_tensor_to_device(module, name, device, value=torch.empty(param.shape), dtype=dtype)
            report.loaded.add(prefix + name)
        module.apply(model._init_weights)
    missing = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise ModelError(f"{directory}: the checkpoint lacks {len(missing)} tensors ({shown}); for an original-"
                         "format checkpoint check that --vision is the vision tower it was trained with")
    # buffers (position ids, rotary frequencies) were built on the CPU; transformers' wrapped `to` reads as unbound
    model.to(device)  # type: ignore[arg-type]


def load_llava(directory: str | Path, *, vision: str | Path | None = None, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu", region_settings: dict[str, Any] | None = None
               ) -> tuple[MGIMMForConditionalGeneration, MGIMMProcessor]:
    """(model, processor) of a LLaVA-family directory. region_settings None: global-only with the
    region as box text (inference); a dict: MGIMM's layout with a fresh region module (from_llava)."""
    from transformers import AutoTokenizer

    directory, device = Path(directory), torch.device(device)
    kind = inspect_model(directory, vision)
    if not isinstance(kind.family, LlavaLayout):
        raise ModelError(f"{directory}: a {kind.family.title} directory, not LLaVA-1.5; load it with "
                         "load_for_inference")
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()   # it warns that model_type "geochat" is not a transformers type
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{directory}: no usable tokenizer ({exc}); copy the checkpoint's tokenizer files "
                         "(tokenizer.json or tokenizer.model with tokenizer_config.json) beside it") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    config = llava_config(directory, kind, tokenizer, region_settings)
    model = _empty_model(config)
    report = LoadReport()
    if kind.vision_dir is not None:
        load_weights(model, weight_files(kind.vision_dir), clip_key, dtype, device, report)
    mapper = hf_key if kind.family.hf_layout else original_key
    load_weights(model, weight_files(directory), mapper, dtype, device, report)
    _finish(model, report, directory, dtype, device, fresh=("region_module.",) if region_settings else ())
    model.eval()  # type: ignore[no-untyped-call]  # transformers' (untyped)
    processor = MGIMMProcessor.from_config(config, tokenizer)
    return model, processor


def from_llava(directory: str | Path, vision: str | Path | None = None, *,
               region_settings: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> tuple[MGIMMForConditionalGeneration, MGIMMProcessor]:
    """MGIMM whose vision tower, projector and LM come from a LLaVA-1.5 checkpoint, with a fresh
    region module (default settings: `demo_region_settings()`), ready for stage 1
    (docs/training.md). Returns (model, processor); save both with save_pretrained."""
    from .configuration_mgimm import demo_region_settings

    model, processor = load_llava(directory, vision=vision, dtype=dtype, device=device,
                                  region_settings=region_settings or demo_region_settings())
    model.config.source_format = "mgimm"   # a new MGIMM model now (mgimm_core/families/mgimm.py)
    model.config.default_prompt = DESCRIPTION_PROMPT
    return model, processor

