"""MGIMMProcessor: chips + region prompts + text -> model inputs (a BatchFeature).

A chip of any size (uint8 H x W x 3, as the geo core cuts it) is resized keeping its aspect so its
longer side is `image_size`, placed at the top-left of a square canvas padded with the encoder's
mean colour, and normalised. Boxes (x1, y1, x2, y2, chip pixels) and masks (bool H x W) go through
exactly the same transform (`ChipTransform`), so a region stays on the pixels it covered.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BatchFeature, PreTrainedTokenizerFast

from mgimm_core.errors import ModelError, RegionError

from .detokenize_mgimm import WordDetokenizer
from .region_mgimm import box_to_mask

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from .configuration_mgimm import MGIMMConfig

#: a chip's region boxes: an (R, 4) array or R boxes of x1, y1, x2, y2
BoxesLike = np.ndarray | Sequence[Sequence[float]]

PROCESSOR_FILE = "mgimm_processor.json"

#: region_prompt setting -> its region convention (mgimm_core/families/regions.py)
TEXT_CONVENTIONS = {"geochat": "geochat_0_100", "box_text": "unit_box"}
SPECIAL_TOKENS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>", "image": "<image>"}


@dataclass(frozen=True)
class ChipTransform:
    """Chip pixels -> model input pixels: x_in = x_chip * scale_x, y_in = y_chip * scale_y
    (the resized chip sits at the top-left of the square input; the rest is padding)."""

    chip_height: int
    chip_width: int
    image_size: int

    @property
    def resized_shape(self) -> tuple[int, int]:
        scale = self.image_size / max(self.chip_height, self.chip_width)
        return (max(1, round(self.chip_height * scale)), max(1, round(self.chip_width * scale)))

    @property
    def scale_xy(self) -> tuple[float, float]:
        h, w = self.resized_shape
        return w / self.chip_width, h / self.chip_height

    def boxes_to_input(self, boxes: np.ndarray) -> np.ndarray:
        sx, sy = self.scale_xy
        scaled: np.ndarray = np.asarray(boxes, dtype=np.float64) * np.array([sx, sy, sx, sy])
        return scaled

    def boxes_to_chip(self, boxes: np.ndarray) -> np.ndarray:
        sx, sy = self.scale_xy
        scaled: np.ndarray = np.asarray(boxes, dtype=np.float64) / np.array([sx, sy, sx, sy])
        return scaled


def build_word_tokenizer(words: list[str], lowercase: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (no download): ids 0..4 are <pad>, <s>, </s>, <unk>, <image>, then
    `words` in order. Text splits on whitespace and punctuation; decoding joins words with spaces."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    specials = list(SPECIAL_TOKENS.values())
    vocab = {token: i for i, token in enumerate(specials)}
    for word in words:
        vocab.setdefault(word.lower() if lowercase else word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk"]))
    if lowercase:
        backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=SPECIAL_TOKENS["pad"], bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"], unk_token=SPECIAL_TOKENS["unk"],
        additional_special_tokens=[SPECIAL_TOKENS["image"]],
    )


def image_token_id_for(tokenizer_dir: str, image_token: str = "<image>") -> int:
    """Id `image_token` has (or will have once added) in the tokenizer saved in `tokenizer_dir`."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{tokenizer_dir}: no usable tokenizer ({exc}); pass image_token_id explicitly") from exc
    return ensure_image_token(tokenizer, image_token)


def ensure_image_token(tokenizer: PreTrainedTokenizerBase, image_token: str = "<image>") -> int:
    """Add `image_token` as a special token when missing; return its id."""
    if image_token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [image_token]})
    return cast(int, tokenizer.convert_tokens_to_ids(image_token))   # one token, one id


def encoder_normalisation(vision_dir: str) -> dict[str, Any]:
    """image_mean / image_std from a vision dir's preprocessor_config.json (empty when absent)."""
    path = os.path.join(vision_dir, "preprocessor_config.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        settings = json.load(fh)
    return {k: tuple(settings[k]) for k in ("image_mean", "image_std") if k in settings}


class MGIMMProcessor:
    """Turns chips, region prompts and text into `MGIMMForConditionalGeneration` inputs.

    Build it with `MGIMMProcessor.from_config(model.config, tokenizer)` so token counts agree with
    the model. Saved as the tokenizer files plus `mgimm_processor.json`.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, image_size: int, image_mean: Sequence[float],
                 image_std: Sequence[float], num_global_tokens: int,
                 tokens_per_region: int, prompt_template: str, default_prompt: str,
                 image_token: str = "<image>", image_token_id: int | None = None,
                 mode: str = "global_region", add_bos: bool = True, word_detokenize: bool = False,
                 cased_words: Iterable[str] = (), region_prompt: str = "tokens", guided_descriptions: bool = False,
                 chip_context: float | None = None, chip_min_window: int | None = None,
                 gsd_prompt: bool = False, guide_no_object_probability: float | None = None,
                 no_object_probability: float | None = None) -> None:
        """word_detokenize: decoded text comes from a word-level tokenizer (spaces around every
        punctuation mark, lower case) and is rejoined into prose, restoring `cased_words`.
        chip_context, chip_min_window: how the geo core places regions for this model (read by
        mgimm_core/model_dir.py without loading the processor); None: the project's defaults.
        guided_descriptions: the model was trained with the attribute answers in its description
        question (mgimm_core/prompts.py guided_description_prompt), so the describer passes them.
        gsd_prompt: the model was trained with the chip's GSD in every question (prompts.with_gsd,
        "Pixel size 0.5 m. ..."), so the describer puts it there; models without the setting get
        their questions as trained.
        guide_no_object_probability: the probability of the "no distinct objects" answer above which
        a guide is not found (describer.py `Describer.guide_threshold`), tuned for this model on the benchmark's
        dev split; None: the project's default (describer.GUIDE_NO_OBJECT_PROBABILITY).
        no_object_probability: a region's attribute answer may say "no distinct objects" only where the
        model gives its first word at least this probability (describer.py `Describer.no_object_floor`),
        tuned on the dev split; None: no floor."""
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.num_global_tokens = num_global_tokens
        self.tokens_per_region = tokens_per_region
        self.prompt_template = prompt_template
        self.default_prompt = default_prompt
        self.image_token = image_token
        self.mode = mode
        self.add_bos = add_bos
        self.word_detokenize = word_detokenize
        self.cased_words = tuple(cased_words)
        self.region_prompt = region_prompt
        self.guided_descriptions = bool(guided_descriptions)
        self.chip_context = chip_context
        self.chip_min_window = chip_min_window
        self.gsd_prompt = bool(gsd_prompt)
        self.guide_no_object_probability = guide_no_object_probability
        self.no_object_probability = no_object_probability
        self._detokenize = WordDetokenizer(self.cased_words) if word_detokenize else None
        found = ensure_image_token(tokenizer, image_token)
        if image_token_id is not None and found != image_token_id:
            raise ModelError(
                f"tokenizer gives {image_token} id {found} but the model expects {image_token_id}: use "
                "the tokenizer saved with the model"
            )
        self.image_token_id = found

    @classmethod
    def from_config(cls, config: MGIMMConfig, tokenizer: PreTrainedTokenizerBase,
                    **overrides: Any) -> "MGIMMProcessor":
        settings: dict[str, Any] = dict(
            image_size=config.image_size, image_mean=config.image_mean, image_std=config.image_std,
            num_global_tokens=config.num_global_tokens, tokens_per_region=config.tokens_per_region,
            prompt_template=config.prompt_template, default_prompt=config.default_prompt,
            image_token=config.image_token, image_token_id=config.image_token_id, mode=config.mode,
            region_prompt=config.region_prompt,
        )
        settings.update(overrides)
        return cls(tokenizer, **settings)

    def _settings(self) -> dict[str, Any]:
        settings = dict(
            image_size=self.image_size, image_mean=list(self.image_mean), image_std=list(self.image_std),
            num_global_tokens=self.num_global_tokens, tokens_per_region=self.tokens_per_region,
            prompt_template=self.prompt_template, default_prompt=self.default_prompt,
            image_token=self.image_token, image_token_id=self.image_token_id, mode=self.mode,
            add_bos=self.add_bos, word_detokenize=self.word_detokenize, cased_words=list(self.cased_words),
            region_prompt=self.region_prompt, guided_descriptions=self.guided_descriptions,
        )
        settings.update({k: v for k, v in (("chip_context", self.chip_context),
                                          ("chip_min_window", self.chip_min_window),
                                          ("guide_no_object_probability", self.guide_no_object_probability),
                                          ("no_object_probability", self.no_object_probability))
                         if v is not None})
        if self.gsd_prompt:
            settings["gsd_prompt"] = True
        return settings

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        os.makedirs(directory, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        with open(os.path.join(directory, PROCESSOR_FILE), "w", encoding="utf-8") as fh:
            json.dump(self._settings(), fh, indent=2)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str]) -> "MGIMMProcessor":
        path = os.path.join(directory, PROCESSOR_FILE)
        if not os.path.isfile(path):
            raise ModelError(f"{directory}: no {PROCESSOR_FILE}; save the processor with save_pretrained")
        with open(path, encoding="utf-8") as fh:
            settings = json.load(fh)
        return cls(AutoTokenizer.from_pretrained(directory), **settings)

    # ------------------------------------------------------------------ images and regions
    def chip_transform(self, chip_shape: Sequence[int]) -> ChipTransform:
        return ChipTransform(int(chip_shape[0]), int(chip_shape[1]), self.image_size)

    def preprocess_image(self, chip: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) chip (or float in 0..1) -> (3, S, S) normalised, resized, padded."""
        chip = np.asarray(chip)
        if chip.ndim != 3 or chip.shape[2] != 3:
            raise ModelError(f"chip of shape {chip.shape}: expected (height, width, 3) RGB")
        # a copy only where needed: chips decoded from a request's image are read-only, which torch warns of
        pixels = torch.from_numpy(np.require(chip, requirements=("C", "W"))).permute(2, 0, 1).float()
        if chip.dtype == np.uint8:
            pixels = pixels / 255.0
        transform = self.chip_transform(chip.shape)
        resized = F.interpolate(pixels[None], size=transform.resized_shape, mode="bilinear",
                                align_corners=False, antialias=True)[0]
        mean = torch.tensor(self.image_mean)[:, None, None]
        std = torch.tensor(self.image_std)[:, None, None]
        out = torch.zeros(3, self.image_size, self.image_size)  # 0 = mean colour after normalisation
        h, w = transform.resized_shape
        out[:, :h, :w] = (resized.clamp(0, 1) - mean) / std
        return out

    def preprocess_mask(self, mask: np.ndarray, transform: ChipTransform) -> torch.Tensor:
        """bool (H, W) chip mask -> bool (S, S) input mask (area-resampled, >= half covered)."""
        area = torch.from_numpy(np.require(mask, dtype=np.float32, requirements=("C", "W")))
        resized = F.interpolate(area[None, None], size=transform.resized_shape, mode="area")[0, 0]
        out = torch.zeros(self.image_size, self.image_size, dtype=torch.bool)
        h, w = transform.resized_shape
        out[:h, :w] = resized >= 0.5
        return out

    def _check_boxes(self, boxes: BoxesLike, chip_shape: Sequence[int], index: int) -> np.ndarray:
        checked: np.ndarray = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        h, w = chip_shape[:2]
        for r, (x1, y1, x2, y2) in enumerate(checked):
            if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
                raise RegionError(
                    f"image {index}, region {r}: box {[x1, y1, x2, y2]} is empty or outside the "
                    f"{w} x {h} chip; give x1 < x2, y1 < y2 in chip pixels"
                )
        return checked

    # ------------------------------------------------------------------ text
    def region_text(self, input_boxes: BoxesLike) -> str:
        """The regions as text, for models that take the box in the prompt: LLaVA-1.5's
        `[x1, y1, x2, y2]` in 0..1 of the square input, or GeoChat's `{<x1><y1><x2><y2>|0}` in
        0..100 (θ 0: the boxes are axis-aligned). Several regions are joined with "and"."""
        from mgimm_core.families.regions import CONVENTIONS

        convention = CONVENTIONS[TEXT_CONVENTIONS[self.region_prompt]]
        size = self.image_size
        return " and ".join(convention.write(box, size, size)
                            for box in np.asarray(input_boxes, dtype=np.float64).reshape(-1, 4))

    def image_token_count(self, n_regions: int, mode: str) -> int:
        count = self.num_global_tokens if mode in ("global", "global_region") else 0
        if mode in ("region", "global_region"):
            count += self.tokens_per_region * n_regions
        return count

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text.strip() else []

    def prompt_ids(self, prompt: str | None, n_image_tokens: int) -> list[int]:
        """Template with the prompt filled in and `<image>` expanded to n_image_tokens ids."""
        prompt = (prompt if prompt is not None else self.default_prompt).replace(self.image_token, "").strip()
        before, after = self.prompt_template.format(prompt=prompt).split(self.image_token)
        bos = [self.tokenizer.bos_token_id] if self.add_bos and self.tokenizer.bos_token_id is not None else []
        return bos + self._encode(before) + [self.image_token_id] * n_image_tokens + self._encode(after)

    # images, boxes, masks, prompts, answers: one chip's or a list (see below); made lists here
    def __call__(self, images: Any, boxes: Any = None, masks: Any = None, prompts: Any = None, answers: Any = None,
                 mode: str | None = None,
                 padding_side: str = "left", return_tensors: str = "pt") -> BatchFeature:
        """Prepare a batch.

        images: one (H, W, 3) uint8 chip or a list of B chips (sizes may differ).
        boxes: per chip an (R_b, 4) array of x1, y1, x2, y2 in chip pixels (R_b may be 0), or None.
        masks: per chip a list of R_b (H, W) bool polygon masks or None entries (None: the box).
        prompts: one string or B strings (None: config.default_prompt); any `<image>` is removed and
            the template's placeholder expanded.
        answers: B target strings; adds `labels` (-100 on prompt and image positions; eos appended).
        mode: "region", "global_region" or "global" (default: the config's).
        Returns input_ids, attention_mask (B, L); pixel_values (B, 3, S, S); region_boxes (B, R, 4)
        in input pixels; region_valid (B, R); region_masks (B, R, S, S) only when a mask was given;
        labels (B, L) when answers were given.
        """
        mode = mode or self.mode
        single = isinstance(images, np.ndarray) and images.ndim == 3
        images = [images] if single else list(images)
        batch = len(images)
        boxes = [boxes] if single and boxes is not None else (boxes or [None] * batch)
        masks = [masks] if single and masks is not None else (masks or [None] * batch)
        if isinstance(prompts, str) or prompts is None:
            prompts = [prompts] * batch
        if answers is not None and isinstance(answers, str):
            answers = [answers]
        if not (len(boxes) == len(masks) == len(prompts) == batch) or (answers is not None and len(answers) != batch):
            raise ValueError(f"{batch} images but {len(boxes)} box sets, {len(masks)} mask sets, "
                             f"{len(prompts)} prompts: give one of each per image")
        pixel_values, region_boxes, region_masks, any_mask = [], [], [], False
        for i, chip in enumerate(images):
            chip = np.asarray(chip)
            transform = self.chip_transform(chip.shape)
            pixel_values.append(self.preprocess_image(chip))
            chip_boxes = self._check_boxes(boxes[i] if boxes[i] is not None else np.zeros((0, 4)), chip.shape, i)
            input_boxes = torch.from_numpy(transform.boxes_to_input(chip_boxes)).float()
            region_boxes.append(input_boxes)
            chip_masks = masks[i] if masks[i] is not None else [None] * len(chip_boxes)
            if len(chip_masks) != len(chip_boxes):
                raise RegionError(f"image {i}: {len(chip_boxes)} boxes but {len(chip_masks)} masks")
            per_region = []
            for r, mask in enumerate(chip_masks):
                if mask is None:
                    per_region.append(box_to_mask(input_boxes[r], self.image_size))
                    continue
                if np.asarray(mask).shape != chip.shape[:2]:
                    raise RegionError(f"image {i}, region {r}: mask shape {np.asarray(mask).shape} "
                                      f"differs from the chip's {chip.shape[:2]}")
                any_mask = True
                per_region.append(self.preprocess_mask(mask, transform))
            region_masks.append(per_region)

        max_regions = max(len(b) for b in region_boxes)
        size = self.image_size
        boxes_t = torch.zeros(batch, max_regions, 4)
        valid_t = torch.zeros(batch, max_regions, dtype=torch.bool)
        masks_t = torch.zeros(batch, max_regions, size, size, dtype=torch.bool) if any_mask else None
        for i, b in enumerate(region_boxes):
            boxes_t[i, : len(b)] = b
            valid_t[i, : len(b)] = True
            if masks_t is not None:
                for r, m in enumerate(region_masks[i]):
                    masks_t[i, r] = m

        sequences, label_rows = [], []
        for i in range(batch):
            prompt = prompts[i]
            if self.region_prompt != "tokens" and prompt is not None and "{region}" in prompt:
                prompt = prompt.replace("{region}", self.region_text(region_boxes[i].numpy()))
            ids = self.prompt_ids(prompt, self.image_token_count(len(region_boxes[i]), mode))
            labels: Any = [-100] * len(ids)      # this row's, then the batch's tensor
            if answers is not None:
                target = self._encode(answers[i]) + [self.tokenizer.eos_token_id]
                ids, labels = ids + target, labels + target
            sequences.append(ids)
            label_rows.append(labels)
        input_ids, attention_mask, labels = self._pad(sequences, label_rows, padding_side)
        data = dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=torch.stack(pixel_values),
                    region_boxes=boxes_t, region_valid=valid_t)
        if masks_t is not None:
            data["region_masks"] = masks_t
        if answers is not None:
            data["labels"] = labels
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _pad(self, sequences: Sequence[list[int]], label_rows: Sequence[list[int]],
             side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pad_id = self.tokenizer.pad_token_id
        pad_id = pad_id if pad_id is not None else (self.tokenizer.eos_token_id or 0)
        length = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        labels = torch.full((len(sequences), length), -100, dtype=torch.long)
        for i, (seq, lab) in enumerate(zip(sequences, label_rows)):
            span = slice(length - len(seq), length) if side == "left" else slice(0, len(seq))
            ids[i, span] = torch.tensor(seq, dtype=torch.long)
            mask[i, span] = 1
            labels[i, span] = torch.tensor(lab, dtype=torch.long)
        return ids, mask, labels

    def batch_decode(self, generated_ids: torch.Tensor | list[list[int]],
                     stop_strings: list[str] | None = None) -> list[str]:
        """New-token ids (B, T) -> texts, special tokens dropped, cut at the first stop string."""
        texts = self.tokenizer.batch_decode(generated_ids, skip_special_tokens=True)
        out = []
        for text in texts:
            for stop in stop_strings or []:
                if stop in text:
                    text = text[: text.index(stop)]
            text = text.strip()
            out.append(self._detokenize(text) if self._detokenize else text)
        return out
