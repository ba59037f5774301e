"""MGIMMConfig: everything needed to rebuild an MGIMM model, saved as `config.json`.

Holds two sub-configs (any transformers vision encoder, any causal LM) plus the settings of the
parts MGIMM adds: the region interactive module, the projector, the sequence layout and LoRA.
Coordinates everywhere in the model are pixels of the model input (`image_size` square).
"""

from __future__ import annotations

from typing import Any


from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

REGION_TOKEN_KINDS = ("corners", "pooled", "geometry", "zoom", "pixels", "pixel_token")
# "zoom" tokens: 1 pooled under the region + its zoomed view pooled to ZOOM_GRID x ZOOM_GRID
# (mgimm_core/model/region_mgimm.py `zoom_tokens`).
ZOOM_GRID = 2
# Tokens each kind gives a region (one where not listed).
#: Region-token kinds computed from the chip's pixels, not only from its patch features.
PIXEL_TOKEN_KINDS = ("zoom", "pixels", "pixel_token")
#: Kinds that run the small convolutional encoder of the chip's pixels (region_mgimm.PixelRegionEncoder).
PIXEL_ENCODER_KINDS = ("pixels", "pixel_token")
TOKENS_OF_KIND = {"corners": 2, "zoom": 1 + ZOOM_GRID**2, "pixels": 0}
# How the region reaches the LM: region tokens, or (LLaVA-family checkpoints, which were trained
# without a region module) box text in the prompt, LLaVA-1.5's or GeoChat's convention.
REGION_PROMPTS = ("tokens", "box_text", "geochat")
MODES = ("region", "global_region", "global")
VISION_FEATURE_SELECTS = ("patch", "full")

# Instruction used by the reference code for stage 1 (docs/training.md).
REGION_INSTRUCTION = (
    "Based on the provided region of the remote sensing image, describe the basic attributes of the "
    "main objects in that region."
)

# CLIP ViT-L/14-336 as the reference uses it (docs/training.md).
_CLIP_L_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 336,
    "projection_dim": 768,
}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@strict
class MGIMMConfig(PreTrainedConfig):
    r"""Configuration of an MGIMM model.

    Args:
        vision_config: sub-config of the vision encoder (`clip_vision_model`, `siglip_vision_model`,
            `dinov2`, `vit`, ...). Default: CLIP ViT-L/14 at 336 px.
        text_config: sub-config of the causal LM (`llama`, `gpt2`, `phi`, `qwen2`, ...).
        vision_feature_layer: index into the encoder's hidden states (-2: second-to-last layer).
        vision_feature_select: "patch" drops CLS / register tokens, "full" keeps every token.
        freeze_vision: the encoder is frozen by `configure_trainable` defaults (reference: always).
        image_size: side of the square model input, pixels. Must equal the encoder's image size.
        image_mean, image_std: per-channel normalisation of the encoder (values in 0..1).
        global_tokens: None keeps all patch tokens (reference); an int k (a square) pools the patch
            grid to k tokens.
        region_tokens: kinds of tokens per region: "corners" (2 tokens, the reference), "pooled"
            (mask-pooled patch features), "geometry" (box position, size, aspect, mask fill),
            "zoom" (5 tokens from a zoomed view of the region: the vision tower run again on a
            square around the box, up to 4x larger, its patches pooled under the mask and to a
            2 x 2 grid; no weights of its own, so small objects span several patches), "pixels"
            (no token of its own, with "pooled" only: a small convolutional encoder of the chip's
            own pixels, pooled under the region, added to the pooled token, so an object of a few
            pixels keeps its colour and outline, which a ViT's 14 px patch embedding mixes with its
            surroundings), "pixel_token" (the same encoder as a token of its own; not with "pixels").
        region_masked_attention: region queries attend only to patches the region covers.
        region_dense_mask: add a learned in/out-of-region embedding to the patch keys (weighted by
            the area fraction each patch has inside the region), so a polygon differs from its box.
        region_depth, region_heads, region_mlp_dim, region_attention_downsample: two-way
            transformer shape (reference: 2, 8, 2048, 2). Its width is the vision width.
        region_box_shift, region_prompt_size: reference-compatibility settings for the Fourier
            encoding of the box corners (only there: the dense encoding stays the patch-centre grid,
            the other token kinds use image_size). A corner c (input px) is encoded at
            (c + region_box_shift) / region_prompt_size. Models trained here keep the neutral
            defaults (0.0 and None = image_size); checkpoints imported from the reference code need
            0.5 and 800 (its SAM prompt encoder shifts boxes by half a pixel and divides by its
            800-px prompt size while the boxes are scaled to 336 px; see
            `reference_region_settings()`).
        region_prompt: "tokens" (MGIMM) or, for LLaVA-family checkpoints run in mode "global",
            "box_text" (LLaVA-1.5: `[x1, y1, x2, y2]` in 0..1 of the input) or "geochat"
            (`{<x1><y1><x2><y2>|0}` in 0..100): the processor writes the box into the prompt's
            `{region}` field. region_tokens may then be empty (no region module).
        source_format: what the weights were loaded from ("mgimm", "llava-hf", "llava-original",
            "geochat"; mgimm_core/model_formats.py), for model-info and provenance.
        projector_hidden_act: activation between the projector's two linear layers.
        mode: default sequence layout: "region" (stage 1), "global_region" (stage 2, inference),
            "global" (ablation).
        prompt_template: text with one `{prompt}` field and one `<image>` placeholder.
        default_prompt: instruction used when a caller gives none.
        image_token: the placeholder token; image_token_id its id in the tokenizer.
        use_lora: the language model carries (unmerged) LoRA adapters; set by `add_lora`.
        lora_r, lora_alpha, lora_dropout, lora_target_modules: LoRA settings (reference: 16, 256,
            0.05, all linear layers: "all-linear").
    """

    model_type = "mgimm"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="clip_vision_model", init_kwargs=_CLIP_L_336
        ),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict[str, Any] | PreTrainedConfig | None = None
    text_config: dict[str, Any] | PreTrainedConfig | None = None
    vision_feature_layer: int = -2
    vision_feature_select: str = "patch"
    freeze_vision: bool = True
    image_size: int = 336
    image_mean: list[float] | tuple[float, ...] = CLIP_MEAN
    image_std: list[float] | tuple[float, ...] = CLIP_STD
    global_tokens: int | None = None
    region_tokens: list[str] | tuple[str, ...] = ("corners",)
    region_masked_attention: bool = False
    region_dense_mask: bool = True
    region_depth: int = 2
    region_heads: int = 8
    region_mlp_dim: int = 2048
    region_attention_downsample: int = 2
    region_box_shift: float = 0.0
    region_prompt_size: int | None = None
    region_prompt: str = "tokens"
    source_format: str = "mgimm"
    projector_hidden_act: str = "gelu"
    mode: str = "global_region"
    prompt_template: str = "USER: <image>\n{prompt} ASSISTANT:"
    default_prompt: str = REGION_INSTRUCTION
    image_token: str = "<image>"
    image_token_id: int = 32000
    use_lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] | tuple[str, ...] = "all-linear"
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)  # type: ignore[no-untyped-call]  # transformers' (untyped)
        self.region_tokens = tuple(self.region_tokens)
        self.image_mean = tuple(float(v) for v in self.image_mean)
        self.image_std = tuple(float(v) for v in self.image_std)
        if not isinstance(self.lora_target_modules, str):
            self.lora_target_modules = tuple(self.lora_target_modules)
        self.validate_mgimm()

    def validate_mgimm(self) -> None:
        """Raise ValueError naming the field and the fix when settings cannot work together."""
        unknown = [k for k in self.region_tokens if k not in REGION_TOKEN_KINDS]
        global_only = self.mode == "global" and self.region_prompt != "tokens"
        repeated = len(set(self.region_tokens)) != len(self.region_tokens)
        if unknown or repeated or (not self.region_tokens and not global_only):
            raise ValueError(
                f"region_tokens={self.region_tokens!r}: give one or more distinct kinds of {REGION_TOKEN_KINDS} "
                "(none only for a global-only model whose region is box text: mode 'global', region_prompt "
                "'box_text' or 'geochat')"
            )
        if "pixels" in self.region_tokens and "pooled" not in self.region_tokens:
            raise ValueError(f"region_tokens={self.region_tokens!r}: kind 'pixels' adds to the 'pooled' "
                             "token; list 'pooled' too")
        if "pixels" in self.region_tokens and "pixel_token" in self.region_tokens:
            raise ValueError(f"region_tokens={self.region_tokens!r}: 'pixels' and 'pixel_token' are one encoder "
                             "added to the pooled token or as a token of its own; list one of them")
        if self.region_prompt not in REGION_PROMPTS:
            raise ValueError(f"region_prompt={self.region_prompt!r}: use one of {REGION_PROMPTS}")
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}: use one of {MODES}")
        if self.vision_feature_select not in VISION_FEATURE_SELECTS:
            raise ValueError(
                f"vision_feature_select={self.vision_feature_select!r}: use one of {VISION_FEATURE_SELECTS}"
            )
        vision_size = getattr(self.vision, "image_size", None)
        if vision_size is not None and vision_size != self.image_size:
            raise ValueError(
                f"image_size={self.image_size} but the vision encoder expects {vision_size} px: "
                "set both to the same value"
            )
        patch = getattr(self.vision, "patch_size", None)
        if patch and self.image_size % patch:
            raise ValueError(f"image_size={self.image_size} is not a multiple of patch_size={patch}")
        if self.global_tokens is not None:
            side = round(self.global_tokens**0.5)
            if self.global_tokens <= 0 or side * side != self.global_tokens:
                raise ValueError(f"global_tokens={self.global_tokens}: use None or a square number such as 16")
            if side > self.grid_size:
                raise ValueError(f"global_tokens={self.global_tokens} exceeds the {self.grid_size}^2 patch grid")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError("image_mean and image_std need 3 values each, std > 0")
        if self.prompt_template.count(self.image_token) != 1 or "{prompt}" not in self.prompt_template:
            raise ValueError(
                f"prompt_template={self.prompt_template!r} needs exactly one {self.image_token} and one {{prompt}}"
            )
        if self.region_prompt_size is not None and self.region_prompt_size <= 0:
            raise ValueError(f"region_prompt_size={self.region_prompt_size}: use None (= image_size) or a "
                             "positive number of pixels (the reference's is 800)")
        vision_width = self.vision.hidden_size
        if vision_width % self.region_heads or (vision_width // self.region_attention_downsample) % self.region_heads:
            raise ValueError(
                f"region_heads={self.region_heads} must divide the vision width {vision_width} and "
                f"that width / region_attention_downsample={self.region_attention_downsample}"
            )

    # The sub-configs as __post_init__ leaves them. The fields also accept a dict or None (what
    # config.json and callers pass); these say, checked, that they are built configs by now.
    @property
    def vision(self) -> PreTrainedConfig:
        """The vision encoder's config."""
        return _built(self.vision_config, "vision_config")

    @property
    def text(self) -> PreTrainedConfig:
        """The language model's config."""
        return _built(self.text_config, "text_config")

    # Derived sizes the processor and the model must agree on.
    @property
    def grid_size(self) -> int:
        """Patches per side of the input (image_size / patch_size)."""
        side: int = self.image_size // self.vision.patch_size
        return side

    @property
    def num_global_tokens(self) -> int:
        return self.grid_size**2 if self.global_tokens is None else self.global_tokens

    @property
    def tokens_per_region(self) -> int:
        return sum(TOKENS_OF_KIND.get(kind, 1) for kind in self.region_tokens)

    @property
    def region_needs_pixels(self) -> bool:
        """True when region tokens are computed from the chip's pixels (PIXEL_TOKEN_KINDS), not
        only from its patch features: callers that pass precomputed `patches` must pass `pixel_values` too."""
        return any(kind in PIXEL_TOKEN_KINDS for kind in self.region_tokens)


def _built(sub: dict[str, Any] | PreTrainedConfig | None, field: str) -> PreTrainedConfig:
    """PreTrainedConfig.__post_init__ builds every sub-config of sub_configs_defaults (none of ours is
    optional); a dict or None here means the field was replaced after that."""
    if not isinstance(sub, PreTrainedConfig):
        raise TypeError(f"MGIMMConfig.{field} is a {type(sub).__name__}, not a built config: pass it to "
                        "MGIMMConfig(...) instead of assigning it afterwards")
    return sub


def tiny_config(**overrides: Any) -> MGIMMConfig:
    """A randomly initialisable MGIMM for tests: CLIP vision and LLaMA, hidden 32, 2 layers, 32 px,
    patch 8 (a 4 x 4 grid), vocabulary 64 with <pad>, <s>, </s>, <unk>, <image> at ids 0..4."""
    vision = dict(
        model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, image_size=32, patch_size=8, projection_dim=32,
    )
    text = dict(
        model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, vocab_size=64, max_position_embeddings=256,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    vision.update(overrides.pop("vision_config", {}))
    text.update(overrides.pop("text_config", {}))
    settings: dict[str, Any] = dict(
        vision_config=vision, text_config=text, image_size=32,
        region_heads=2, region_mlp_dim=64, prompt_template="<image> {prompt} :", image_token_id=4,
        default_prompt="describe",
    )
    settings.update(overrides)
    return MGIMMConfig(**settings)


def demo_region_settings() -> dict[str, Any]:
    """Region-module settings that learned region attributes on small data (docs/training.md):
    corner tokens with attention limited to the region, a mask-pooled token and a geometry token."""
    return dict(
        region_tokens=("corners", "pooled", "geometry"),
        region_masked_attention=True,
        region_dense_mask=True,
    )


def reference_region_settings() -> dict[str, Any]:
    """Region-module settings that reproduce the reference code's box path exactly, for checkpoints
    imported with convert_reference (docs/model.md): two corner tokens only, no dense mask, no
    masked attention, its two-way transformer shape, and its box numerics (+0.5 px shift, corners
    divided by the 800-px prompt size). Not a recipe for new models: train with the neutral defaults
    or `demo_region_settings()`."""
    return dict(
        region_tokens=("corners",),
        region_dense_mask=False,
        region_masked_attention=False,
        region_depth=2,
        region_heads=8,
        region_mlp_dim=2048,
        region_attention_downsample=2,
        region_box_shift=0.5,
        region_prompt_size=800,
    )
