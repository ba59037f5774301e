"""MGIMMForConditionalGeneration: vision encoder + region interactive module + projector + causal LM.

Sequence layout: the processor expands the one `<image>` placeholder of each prompt into as many
image tokens as the sample has features; the model computes those features and puts them at the
image-token positions, in order: [global tokens (if the mode uses them), then for each valid
region its region tokens (if the mode uses them)].
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.utils.generic import ModelOutput

from mgimm_core.errors import ModelError

from .configuration_mgimm import PIXEL_ENCODER_KINDS, MGIMMConfig
from .lora_mgimm import wrap_with_lora
from .region_mgimm import (RegionInteractiveModule, box_to_mask, mask_to_patch_fraction, zoom_view,
                           zoom_windows)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class MGIMMCausalLMOutput(ModelOutput):
    """Output of `MGIMMForConditionalGeneration.forward`.

    loss: () mean next-token loss over positions whose label is not -100 (when labels are given).
    logits: (batch, sequence, vocab).
    cache: the LM's KV cache (when use_cache; transformers 5 calls it `cache`).
    hidden_states: the LM's hidden states (when output_hidden_states).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: object | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class MGIMMProjector(nn.Module):
    """2-layer MLP (vision width -> LM width -> LM width) shared by global and region tokens."""

    def __init__(self, config: MGIMMConfig) -> None:
        super().__init__()
        vision_width = config.vision.hidden_size
        text_width = config.text.hidden_size
        self.linear_1 = nn.Linear(vision_width, text_width)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text_width, text_width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        projected: torch.Tensor = self.linear_2(self.act(self.linear_1(features)))
        return projected


class MGIMMPreTrainedModel(PreTrainedModel):
    config: MGIMMConfig
    config_class = MGIMMConfig
    base_model_prefix = "mgimm"
    # transformers' own VLMs (LlavaPreTrainedModel) set a tuple; PreTrainedModel annotates str | list[str]
    input_modalities = ("image", "text")  # type: ignore[assignment]
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True


class StopOnStrings(StoppingCriteria):
    """Stop a sequence once its generated text contains one of `stop_strings` (decoded text, so it
    works with any tokenizer). Generated ids reach it without the prompt (inputs_embeds)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop_strings: list[str], window: int = 16) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = list(stop_strings)
        self.window = window

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        tails = self.tokenizer.batch_decode(input_ids[:, -self.window :], skip_special_tokens=True)
        done = [any(stop in tail for stop in self.stop_strings) for tail in tails]
        return cast(torch.BoolTensor, torch.tensor(done, dtype=torch.bool, device=input_ids.device))


class MGIMMForConditionalGeneration(MGIMMPreTrainedModel):
    """MGIMM: region-guided descriptions. Sub-modules: `vision_tower`, `region_module`,
    `projector`, `language_model` (a causal LM, peft-wrapped while `config.use_lora`)."""

    def __init__(self, config: MGIMMConfig) -> None:
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision)
        self.region_module = RegionInteractiveModule(config)
        self.projector = MGIMMProjector(config)
        self.language_model = AutoModelForCausalLM.from_config(config.text)
        if config.use_lora:
            self.language_model = wrap_with_lora(self.language_model, config)
        self.post_init()  # type: ignore[no-untyped-call]  # transformers' (untyped)

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_components(cls, vision: str | os.PathLike[str], llm: str | os.PathLike[str],
                        image_token_id: int | None = None, dtype: torch.dtype | None = None,
                        **config_overrides: Any) -> "MGIMMForConditionalGeneration":
        """Build from local Hugging Face directories: a vision encoder (`vision`, a vision model or a
        full CLIP/SigLIP dir) and a causal LM (`llm`), with a fresh region module and projector.

        image_token_id: id of `<image>`; default: its id in the LLM dir's tokenizer, or (when the
        tokenizer lacks it) the next free id, growing the LM's embeddings by one row. The processor
        built with `MGIMMProcessor.from_config` adds the token the same way, so ids agree.
        """
        from transformers import AutoConfig

        from .processing_mgimm import encoder_normalisation, image_token_id_for

        if config_overrides.get("use_lora"):
            raise ValueError("from_components builds a plain LM: call add_lora(model) afterwards")
        vision, llm = os.fspath(vision), os.fspath(llm)
        for path in (vision, llm):
            if not os.path.isfile(os.path.join(path, "config.json")):
                raise ModelError(f"{path}: no config.json; give a local Hugging Face model directory")
        vision_cfg = AutoConfig.from_pretrained(vision)
        vision_cfg = getattr(vision_cfg, "vision_config", None) or vision_cfg
        # transformers annotates every lazy auto mapping's value as a tokenizer pair; MODEL_MAPPING's is a model class
        vision_class = cast(type[PreTrainedModel], MODEL_MAPPING[type(vision_cfg)])
        vision_model = vision_class.from_pretrained(vision, dtype=dtype)
        language_model = AutoModelForCausalLM.from_pretrained(llm, dtype=dtype)
        if image_token_id is None:
            image_token_id = image_token_id_for(llm, config_overrides.get("image_token", "<image>"))
        # an nn.Embedding, as resize_token_embeddings below assumes too
        embeddings = cast(nn.Embedding, language_model.get_input_embeddings())
        if image_token_id >= embeddings.num_embeddings:
            language_model.resize_token_embeddings(image_token_id + 1)
        settings = dict(encoder_normalisation(vision))
        settings.update(image_size=vision_model.config.image_size, image_token_id=image_token_id)
        settings.update(config_overrides)
        config = MGIMMConfig(vision_config=vision_model.config, text_config=language_model.config, **settings)
        with torch.device("meta"):
            model = cls(config)
        model.vision_tower = vision_model
        model.language_model = language_model
        model.region_module = RegionInteractiveModule(config)
        model.projector = MGIMMProjector(config)
        for module in (model.region_module, model.projector):
            module.apply(model._init_weights)
        model.region_module.to(vision_model.dtype)
        model.projector.to(vision_model.dtype)
        return model

    # ------------------------------------------------------------------ features
    def get_input_embeddings(self) -> nn.Module:
        embeddings: nn.Module = self.language_model.get_input_embeddings()
        return embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def patch_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels -> (B, P, vision width) features of `vision_feature_layer`;
        with vision_feature_select="patch" the leading CLS / register tokens are dropped."""
        dtype = next(self.vision_tower.parameters()).dtype
        out = self.vision_tower(pixel_values=pixel_values.to(dtype), output_hidden_states=True)
        features = out.hidden_states[self.config.vision_feature_layer]
        if self.config.vision_feature_select == "patch":
            features = features[:, -self.config.grid_size**2 :]
        selected: torch.Tensor = features
        return selected

    def global_features(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, P, D) -> (B, num_global_tokens, D): all patches, or the grid average-pooled to k."""
        if self.config.global_tokens is None:
            return patches
        b, p, d = patches.shape
        g = self.config.grid_size
        side = round(self.config.global_tokens**0.5)
        grid = patches.transpose(1, 2).reshape(b, d, g, g)
        return F.adaptive_avg_pool2d(grid, side).flatten(2).transpose(1, 2)

    def region_fractions(self, region_boxes: torch.Tensor, region_masks: torch.Tensor | None,
                         region_valid: torch.Tensor) -> torch.Tensor:
        """Area fraction of each patch inside each region: (B, R, P). Masks (B, R, S, S) bool at
        input resolution; without masks the boxes are rasterised (same rule as the processor)."""
        size, grid = self.config.image_size, self.config.grid_size
        if region_masks is None:
            region_masks = box_to_mask(region_boxes.float(), size)
        return mask_to_patch_fraction(region_masks, grid).flatten(-2)

    def region_features(self, patches: torch.Tensor, region_boxes: torch.Tensor,
                        region_masks: torch.Tensor | None = None,
                        region_valid: torch.Tensor | None = None,
                        pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        """Region tokens of every valid region, in (sample, region) order: (N_valid, T, D).
        pixel_values: the chips (B, 3, S, S); needed when the config's region tokens look at them
        (`config.region_needs_pixels`: kinds "zoom", "pixels", "pixel_token")."""
        if region_valid is None:
            region_valid = torch.ones(region_boxes.shape[:2], dtype=torch.bool, device=region_boxes.device)
        fractions = self.region_fractions(region_boxes, region_masks, region_valid)
        b_idx, r_idx = region_valid.nonzero(as_tuple=True)
        boxes = region_boxes[b_idx, r_idx]
        zoom = pixels = None
        if self.config.region_needs_pixels:
            if pixel_values is None:
                raise ModelError("this model's region tokens look at the chips' pixels "
                                 f"({', '.join(self.config.region_tokens)}): pass pixel_values with the "
                                 "precomputed patches (the chips the patches were computed from)")
            masks = self.input_masks(boxes, region_masks[b_idx, r_idx] if region_masks is not None else None)
            masks = masks.to(pixel_values.device)
            if "zoom" in self.config.region_tokens:
                zoom = self.zoom_features(pixel_values[b_idx], boxes, masks)
            if any(kind in PIXEL_ENCODER_KINDS for kind in self.config.region_tokens):
                pixels = (pixel_values, b_idx.to(pixel_values.device), masks)
        tokens: torch.Tensor = self.region_module(
            patches[b_idx], boxes, fractions[b_idx, r_idx].to(patches.device), zoom, pixels
        )
        return tokens

    def input_masks(self, boxes: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        """(N, S, S) float masks of the regions at input resolution: the polygon's, or its box where
        it has none or it is degenerate (as in RegionInteractiveModule.forward)."""
        box_masks = box_to_mask(boxes.float(), self.config.image_size)
        if masks is None:
            return box_masks.float()
        empty = ~masks.flatten(1).any(1)
        return torch.where(empty[:, None, None], box_masks.to(masks.device), masks.bool()).float()

    def zoom_features(self, pixel_values: torch.Tensor, boxes: torch.Tensor,
                      masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each region's zoomed view (region_mgimm.zoom_windows) through the vision tower: its patch
        features (N, P, D) and the region's area fraction of each of its patches (N, P).
        masks: `input_masks` of the regions."""
        size, grid = self.config.image_size, self.config.grid_size
        windows = zoom_windows(boxes, size).to(pixel_values.device)
        views = zoom_view(pixel_values.float(), windows)
        view_masks = zoom_view(masks[:, None], windows)[:, 0]
        fraction = mask_to_patch_fraction(view_masks, grid).flatten(1)
        return self.patch_features(views), fraction

    def image_features(self, pixel_values: torch.Tensor | None, region_boxes: torch.Tensor | None = None,
                       region_masks: torch.Tensor | None = None, region_valid: torch.Tensor | None = None,
                       mode: str | None = None, patches: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Projected features per sample, in LM width: a list of (n_b, d_llm) tensors, where
        n_b = global tokens (modes global*, ...) + tokens_per_region x valid regions (modes *region).
        patches: `patch_features(pixel_values)` computed before (several questions about the same
        chips run the vision tower once); a model whose region tokens read the pixels ("zoom", "pixels",
        "pixel_token") still needs the pixel_values then (`config.region_needs_pixels`)."""
        mode = mode or self.config.mode
        # pixel_values are given when patches are not
        patches = self.patch_features(cast(torch.Tensor, pixel_values)) if patches is None else patches
        batch = patches.shape[0]
        per_sample: list[list[torch.Tensor]] = [[] for _ in range(batch)]
        if mode in ("global", "global_region"):
            for b, tokens in enumerate(self.global_features(patches)):
                per_sample[b].append(tokens)
        if mode in ("region", "global_region") and region_boxes is not None and region_boxes.shape[1] > 0:
            if region_valid is None:
                region_valid = torch.ones(region_boxes.shape[:2], dtype=torch.bool, device=region_boxes.device)
            tokens = self.region_features(patches, region_boxes, region_masks, region_valid, pixel_values)
            counts = region_valid.sum(1).tolist()
            for b, chunk in enumerate(torch.split(tokens, counts)):
                per_sample[b].append(chunk.flatten(0, 1))
        width = patches.shape[-1]
        flat = [torch.cat(parts) if parts else patches.new_zeros(0, width) for parts in per_sample]
        projected = self.projector(torch.cat(flat))
        return list(torch.split(projected, [f.shape[0] for f in flat]))

    def embed_inputs(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                     region_boxes: torch.Tensor | None = None,
                     region_masks: torch.Tensor | None = None, region_valid: torch.Tensor | None = None,
                     mode: str | None = None,
                     patches: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with image features placed at the image-token positions.
        Raises ValueError when a sample's image-token count differs from its feature count."""
        image_positions = input_ids == self.config.image_token_id
        safe_ids = input_ids.masked_fill(image_positions, 0)
        embeds: torch.Tensor = self.get_input_embeddings()(safe_ids)
        if pixel_values is None and patches is None:
            if image_positions.any():
                raise ValueError("input_ids contain image tokens but no pixel_values were given")
            return embeds
        features = self.image_features(pixel_values, region_boxes, region_masks, region_valid, mode, patches)
        expected = [f.shape[0] for f in features]
        found = image_positions.sum(1).tolist()
        if expected != found:
            raise ValueError(
                f"image tokens per sample {found} do not match image features per sample {expected} "
                f"(mode={mode or self.config.mode!r}, {self.config.num_global_tokens} global tokens, "
                f"{self.config.tokens_per_region} per region): build inputs with an MGIMMProcessor made "
                "from this model's config and the same mode and regions"
            )
        placed = torch.cat(features).to(embeds.dtype)
        return embeds.masked_scatter(image_positions[..., None].expand_as(embeds), placed)

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None,
                region_boxes: torch.Tensor | None = None, region_masks: torch.Tensor | None = None,
                region_valid: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, mode: str | None = None, position_ids: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, use_cache: bool | None = None,
                **kwargs: Any) -> MGIMMCausalLMOutput:
        """input_ids (B, L) with expanded image tokens; attention_mask (B, L) (left or right
        padding); pixel_values (B, 3, S, S); region_boxes (B, R, 4) input px; region_masks
        (B, R, S, S) bool or None; region_valid (B, R) bool (False: padding); labels (B, L), -100
        where no loss; mode overrides config.mode."""
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(cast(torch.Tensor, input_ids), pixel_values, region_boxes,
                                              region_masks, region_valid, mode)
        cached = kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None
        if position_ids is None and attention_mask is not None and not cached:
            # Left padding: positions count real tokens only, so padding never shifts a prompt.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        out = self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
            labels=labels, use_cache=use_cache, **kwargs,
        )
        return MGIMMCausalLMOutput(
            loss=out.loss, logits=out.logits, cache=getattr(out, "cache", None),
            hidden_states=getattr(out, "hidden_states", None),
        )

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor | None = None,
                 region_boxes: torch.Tensor | None = None, region_masks: torch.Tensor | None = None,
                 region_valid: torch.Tensor | None = None,
                 mode: str | None = None, max_new_tokens: int = 200, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, top_k: int | None = None,
                 stop_strings: list[str] | None = None, tokenizer: PreTrainedTokenizerBase | None = None,
                 patches: torch.Tensor | None = None, **generate_kwargs: Any) -> torch.LongTensor:
        """Generate continuations for a left-padded batch; returns only the new token ids
        (B, <= max_new_tokens), padded with the pad id after a sequence ends.

        patches: the chips' `patch_features`, when computed before (instead of pixel_values).

        Greedy by default (deterministic); do_sample=True with temperature / top_p / top_k samples.
        stop_strings need the tokenizer (decoded-text matching); cut texts with
        `MGIMMProcessor.batch_decode(ids, stop_strings=...)`. Uses the LM's KV cache.
        """
        embeds = self.embed_inputs(input_ids, pixel_values, region_boxes, region_masks, region_valid, mode, patches)
        text_config = self.config.text
        eos = generate_kwargs.pop("eos_token_id", getattr(text_config, "eos_token_id", None))
        pad = generate_kwargs.pop("pad_token_id", getattr(text_config, "pad_token_id", None))
        pad = pad if pad is not None else (eos[0] if isinstance(eos, list) else eos)
        sampling = dict(temperature=temperature, top_p=top_p, top_k=top_k) if do_sample else {}
        # cache_implementation="static": fixed-shape KV cache, whose decode step transformers
        # compiles on CUDA (torch.compile of the forward); None: the dynamic cache.
        generation_config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=do_sample, eos_token_id=eos, pad_token_id=pad,
            use_cache=True, cache_implementation=generate_kwargs.pop("cache_implementation", None),
            no_repeat_ngram_size=generate_kwargs.pop("no_repeat_ngram_size", None), **sampling,
        )
        criteria = StoppingCriteriaList(generate_kwargs.pop("stopping_criteria", []))
        if stop_strings:
            if tokenizer is None:
                raise ValueError("stop_strings need the tokenizer: pass tokenizer=processor.tokenizer")
            criteria.append(StopOnStrings(tokenizer, stop_strings))
        with warnings.catch_warnings():
            # With inputs_embeds the repetition guard sees the new tokens only, which is what it is
            # for (the prompt may repeat itself); transformers warns about exactly that.
            warnings.filterwarnings("ignore", message=".*no_repeat_ngram_size.*inputs_embeds.*")
            generated: torch.LongTensor = self.language_model.generate(
                inputs_embeds=embeds, attention_mask=attention_mask, generation_config=generation_config,
                stopping_criteria=criteria, **generate_kwargs,
            )
            return generated

