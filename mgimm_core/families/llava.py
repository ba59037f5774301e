"""The LLaVA-1.5 line: Hugging Face `llava` folders, the LLaVA code's original format, and GeoChat.

LLaVA is MGIMM without the region module, so these load into MGIMM's model class in mode "global"
(mgimm_core/model/llava_mgimm.py) with the region written as text the way each was trained:
LLaVA-1.5's `[x1, y1, x2, y2]` in 0..1, GeoChat's `{<x1><y1><x2><y2>|θ}` in 0..100.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mgimm_core.errors import ModelError
from mgimm_core.families._runtime import MGIMMRuntimeFamily
from mgimm_core.families.base import Licence
from mgimm_core.model_formats import read_json, resolve_vision_dir

if TYPE_CHECKING:
    import os
    import torch

    from mgimm_core.load_options import LoadOptions
    from mgimm_core.model.modeling_mgimm import MGIMMForConditionalGeneration
    from mgimm_core.model.processing_mgimm import MGIMMProcessor
    from mgimm_core.model_formats import ModelKind

#: LLaVA v1 conversation template (LLaVA-1.5 original format and GeoChat), with its system prompt.
LLAVA_V1_TEMPLATE = ("A chat between a curious human and an artificial intelligence assistant. The assistant "
                     "gives helpful, detailed, and polite answers to the human's questions. USER: <image>\n"
                     "{prompt} ASSISTANT:")
#: llava-hf's LLaVA-1.5 chat template (no system prompt).
LLAVA_HF_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"

#: GeoChat runs CLIP ViT-L/14-336 with its position embeddings interpolated to this input size.
GEOCHAT_INPUT_SIZE = 504


class LlavaFamily(MGIMMRuntimeFamily):
    """Common to the three: global-only MGIMM with the region as box text."""

    order = 30
    #: the processor's region-text setting (MGIMMConfig.region_prompt)
    region_prompt = "box_text"
    convention = "unit_box"
    #: tensor names and config in Hugging Face's llava layout (else the LLaVA code's own)
    hf_layout = False
    #: vision input side forced on the tower (GeoChat's interpolated CLIP), None: the tower's own
    vision_input_size: int | None = None
    default_licence = Licence("Llama 2 / Vicuna terms (see the checkpoint's card)")

    def prompt_template(self, kind: ModelKind) -> str:
        return LLAVA_HF_TEMPLATE if self.hf_layout else LLAVA_V1_TEMPLATE

    def recorded_prompt(self, prompt: str | None) -> str:
        from mgimm_core.prompts import TEXT_REGION_PROMPTS

        return prompt or TEXT_REGION_PROMPTS[self.region_prompt][1]

    def vision_dir(self, directory: Path, config: dict[str, Any], vision: str | os.PathLike[str] | None) -> Path | None:
        return None if self.hf_layout else resolve_vision_dir(directory, config, vision)

    def input_size(self, kind: ModelKind) -> int | None:
        if self.vision_input_size is not None:
            return self.vision_input_size
        if kind.vision_dir is not None:
            vision_config = read_json(kind.vision_dir / "config.json")
            vision = vision_config.get("vision_config") or vision_config
            size = kind.config.get("image_size") or vision.get("image_size")
            return size if isinstance(size, int) and size > 0 else None
        return super().input_size(kind)

    def load_model(self, kind: ModelKind, device: str,
                   dtype: torch.dtype) -> tuple[MGIMMForConditionalGeneration, MGIMMProcessor]:
        from mgimm_core.model.llava_mgimm import load_llava

        return load_llava(kind.path, vision=kind.vision_dir, dtype=dtype, device=device)


class LlavaHFFamily(LlavaFamily):
    name = "llava-hf"
    served_id_patterns = ("*llava-1.5*", "*llava-v1.5*")
    title = "LLaVA-1.5 (Hugging Face llava)"
    hf_layout = True
    weights_hint = "a llava-hf/llava-1.5-*-hf folder (huggingface-cli download on a connected machine, then copy)"

    def recognise(self, config: dict[str, Any], directory: Path) -> bool:
        return config.get("model_type") == "llava" and ("text_config" in config or "vision_config" in config)


class LlavaOriginalFamily(LlavaFamily):
    name = "llava-original"
    served_id_patterns = ()       # served, it is llava-hf
    title = "LLaVA-1.5 (original format)"
    weights_hint = "a liuhaotian/llava-v1.5-* folder plus its CLIP vision tower folder (--vision)"

    def recognise(self, config: dict[str, Any], directory: Path) -> bool:
        return config.get("model_type") == "llava" and ("mm_vision_tower" in config or "mm_projector_type" in config)


class GeoChatFamily(LlavaFamily):
    name = "geochat"
    served_id_patterns = ("*geochat*",)
    title = "GeoChat"
    order = 20
    region_prompt = "geochat"
    convention = "geochat_0_100"
    vision_input_size = GEOCHAT_INPUT_SIZE
    default_licence = Licence("Apache-2.0 over Vicuna / Llama 2 terms (GeoChat's card)")
    weights_hint = "MBZUAI/geochat-7B plus openai/clip-vit-large-patch14-336 (--vision)"

    def recognise(self, config: dict[str, Any], directory: Path) -> bool:
        return config.get("model_type") == "geochat"


class LlavaNextOriginalFamily(LlavaOriginalFamily):
    """LLaVA-NeXT / LLaVA-OneVision in the LLaVA code's own format (lmms-lab/llava-onevision-*): the
    same `mm_*` keys as LLaVA-1.5, but tiled ("anyres") inputs that MGIMM's model class does not
    run; recognised so the user learns which release loads."""

    name = "llava-next-original"
    title = "LLaVA-NeXT / OneVision (original format: refused, use the -hf release)"
    order = 25
    weights_hint = "not loadable as is: use the llava-hf/llava-onevision-qwen2-*-hf (or llava-v1.6-*-hf) release"

    def recognise(self, config: dict[str, Any], directory: Path) -> bool:
        tiled = str(config.get("image_aspect_ratio", "")).startswith("anyres") or \
            "unpad" in str(config.get("mm_patch_merge_type", ""))
        return super().recognise(config, directory) and tiled

    def vision_dir(self, directory: Path, config: dict[str, Any], vision: str | os.PathLike[str] | None) -> Path | None:
        return None

    def refusal(self, kind: ModelKind) -> ModelError:
        return ModelError(f"{kind.path}: an original-format LLaVA-NeXT / OneVision folder (image_aspect_ratio "
                          f"{kind.config.get('image_aspect_ratio')!r}); mgimm-geo runs its Hugging Face release: copy "
                          f"llava-hf/llava-onevision-qwen2-*-ov-hf (or llava-hf/llava-v1.6-*-hf) instead.")

    def chip_settings(self, kind: ModelKind) -> NoReturn:
        raise self.refusal(kind)

    def load(self, kind: ModelKind, device: torch.device, options: LoadOptions) -> NoReturn:
        raise self.refusal(kind)


FAMILIES = (LlavaHFFamily(), LlavaOriginalFamily(), LlavaNextOriginalFamily(), GeoChatFamily())
