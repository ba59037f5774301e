"""The describer of transformers-native families (mgimm_core/families/_transformers.py).

Same surface as MGIMM's `Describer` (`describe` -> one `RegionText` per chip), so the one describe
loop runs every family. Each region reaches the model the family's way: written as text in its
convention (Qwen's bbox_2d, InternVL's <box>, Florence-2's <loc_N>...), outlined on the chip, or
cropped. Attribute answers are decoded under the row schema's JSON form (model/json_constraint.py)
where the family answers in JSON; an answer that still cannot be read becomes the row's
`invalid_answer` error, never a crash. Every word comes from `generate`. Each attribute answer that
names an object gets `object_p`: the product of the probabilities `generate` chose its tokens with
(after the JSON form's constraint), over the tokens of the object value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mgimm_core.answers import (ATTRIBUTE_FIELDS, RegionText, json_value_span, parse_answer, row_attributes,
                                span_probability)
from mgimm_core.errors import InvalidAnswerError, ModelError
from mgimm_core.families.base import check_loaded
from mgimm_core.vocabulary import NO_OBJECT_VALUE

if TYPE_CHECKING:   # the family calls this module (TransformersFamily.load), never the reverse
    import PIL.Image
    from transformers import PreTrainedModel

    from mgimm_core.families._transformers import TransformersFamily
    from mgimm_core.families.regions import BoxLike, BoxMask
    from mgimm_core.load_options import LoadOptions
    from mgimm_core.model.json_constraint import JsonAnswerConstraint
    from mgimm_core.model_formats import ModelKind

log = logging.getLogger(__name__)


@dataclass
class Answer:
    """One generated answer: its text, its token ids and the log probability each was chosen with."""

    text: str
    ids: list[int]
    logprobs: list[float]      # empty where they were not kept (beam search)


class ChosenLogprobs:
    """A logits processor, last in the list, that keeps the log probability of the token greedy
    decoding takes at each step (the maximum of the processed scores) for every row. Under beam
    search its rows are beams: `VLMDescriber.generate` then keeps nothing."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.steps.append(scores.float().log_softmax(-1).amax(-1).cpu())
        return scores


@dataclass
class RegionView:
    """What the model is shown for one region: the image and how the question names the region."""

    image: np.ndarray
    region: str


class VLMDescriber:
    """A transformers model + processor of one family on one device."""

    def __init__(self, family: TransformersFamily, model: Any, processor: Any, model_id: str,
                 device: torch.device, *, max_new_tokens: int = 200, region_as: str | None = None,
                 model_dir: Path | None = None) -> None:     # model, processor: the folder's transformers ones
        self.family = family
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.region_as = family.check_region_as(region_as)
        self.model_dir = model_dir
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is not None and not family.encoder_decoder:
            tokenizer.padding_side = "left"     # batched generation continues every row from its end

    @classmethod
    def load(cls, family: TransformersFamily, kind: ModelKind, device: torch.device,
             options: LoadOptions) -> "VLMDescriber":
        """The folder's weights in transformers' own class (safetensors, or .bin read with
        weights_only; never remote code), bf16 on CUDA, fp32 on CPU."""
        from mgimm_core.model.generation_mgimm import inference_dtype

        model: Any = load_weights(family, kind.path, inference_dtype(device))     # a transformers class with generate
        processor = family.load_processor(kind.path)
        return cls(family, model.to(device).eval(), processor, kind.path.name, device,
                   max_new_tokens=options.max_new_tokens, region_as=getattr(options, "region_as", None),
                   model_dir=kind.path)

    # ------------------------------------------------------------------ the Describer surface
    def check_prompt(self, prompt: str | None, strict: bool = False) -> list[str]:
        """Subword tokenizers read any text: no unknown words."""
        return []

    def view(self, chip: np.ndarray, box: BoxLike, mask: np.ndarray | None) -> RegionView:
        """The image and region phrase for a region (box and mask in chip pixels)."""
        image, region = self.family.region_view(self.processor, self.region_as, np.asarray(chip), box, mask)
        return RegionView(image, region)

    def describe(self, images: Sequence[np.ndarray], boxes: Sequence[BoxLike], masks: Sequence[np.ndarray | None],
                 *, attributes: bool = True, description: bool = True, prompt: str | None = None,
                 guides: Sequence[Sequence[BoxMask]] | None = None, guides_left: Sequence[int] | None = None,
                 strict: bool = False, gsds: Sequence[float | None] | None = None) -> list[RegionText]:
        """The attribute question and the description question for each region; guides: per chip
        the (box, mask) of guide objects, each answered with its own attribute question. gsds (the
        chips' GSDs, for MGIMM models trained with them in the question) is not used by these families."""
        results = [RegionText() for _ in images]
        if not images:
            return results
        views = [self.view(chip, box, mask) for chip, box, mask in zip(images, boxes, masks)]
        if attributes:
            for result, answer in zip(results, self.attribute_answers(views)):
                self._set_attributes(result, answer)
        flat = [(i, self.view(images[i], box, mask)) for i, chip_guides in enumerate(guides or [])
                for box, mask in chip_guides]
        if flat:
            for (i, _), answer in zip(flat, self.attribute_answers([v for _, v in flat])):
                obj = RegionText()
                self._set_attributes(obj, answer)
                results[i].objects.append(obj)
        if description:
            questions = [self.family.description_question(v.region, prompt) for v in views]
            for result, answer in zip(results, self.generate([v.image for v in views], questions)):
                result.description = answer.text
        return results

    # ------------------------------------------------------------------ questions
    def attribute_answers(self, views: list[RegionView]) -> list[Answer]:
        questions = [self.family.attribute_question(v.region) for v in views]
        return self.generate([v.image for v in views], questions, json_form=self.family.json_attributes, scored=True)

    def generate(self, images: list[np.ndarray], questions: list[str], json_form: bool = False,
                 scored: bool = False) -> list[Answer]:
        """One greedy answer per (image, question); scored: keep each token's log probability
        (attribute answers, for `object_p`; descriptions skip the per-step softmax)."""
        from transformers import LogitsProcessorList

        texts = [self.family.chat_text(self.processor, q) for q in questions]
        inputs = self.family.model_inputs(self.processor, [_pil(i) for i in images], texts)
        inputs = inputs.to(self.device)
        floating = {k: v.to(self.model.dtype) for k, v in inputs.items() if torch.is_floating_point(v)}
        inputs.update(floating)
        chosen = ChosenLogprobs()
        processors: list[Any] = []
        if json_form:
            start = 1 if self.family.encoder_decoder else inputs["input_ids"].shape[1]
            processors.append(self._json_constraint(start))
        if scored:
            processors.append(chosen)        # last: it reads the scores greedy decoding picks from
        with torch.inference_mode():
            generated = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                            logits_processor=LogitsProcessorList(processors))
        rows = self.family.answer_ids(generated, inputs).tolist()
        # beam search (a folder's generation_config may ask for it) keeps beams, not one row each: no record
        greedy = bool(chosen.steps) and chosen.steps[0].shape[0] == len(rows)
        logprobs = torch.stack(chosen.steps, 1).tolist() if greedy else [[] for _ in rows]
        return [Answer(self.family.answer_text(self.processor, row), row, steps[-len(row):] if row else [])
                for row, steps in zip(rows, logprobs)]

    def _json_constraint(self, start: int) -> JsonAnswerConstraint:
        from mgimm_core.model.json_constraint import JsonAnswerConstraint

        cached = getattr(self, "_constraint", None)
        if cached is None:
            cached = self._constraint = JsonAnswerConstraint(self.processor.tokenizer, ATTRIBUTE_FIELDS, start)
        cached.prompt_length = start
        return cached

    def _set_attributes(self, result: RegionText, answer: Answer) -> None:
        text = result.attribute_text = answer.text
        try:
            result.attributes = (row_attributes(parse_answer(text, ATTRIBUTE_FIELDS)) if self.family.json_attributes
                                 else self.family.parse_attributes(text))
        except InvalidAnswerError as exc:
            result.error = exc
            return
        name = result.attributes.get("name")
        if name in (None, NO_OBJECT_VALUE):
            return
        start = text.find(name)
        span = json_value_span(text, "object") if self.family.json_attributes else (start, start + len(name))
        if span is not None and span[0] >= 0 and answer.logprobs:
            result.object_p = span_probability(self._token_ends(answer.ids, span[1]), answer.logprobs, span)

    def _token_ends(self, ids: list[int], until: int) -> list[int]:
        """Where each token of an answer ends in its text (as `answer_text` decodes it), up to `until`."""
        ends: list[int] = []
        for k in range(len(ids)):
            ends.append(len(self.family.answer_text(self.processor, ids[:k + 1])))
            if ends[-1] >= until:
                break
        return ends


def load_weights(family: TransformersFamily, directory: Path, dtype: torch.dtype) -> PreTrainedModel:
    """The family's transformers class with the folder's weights in `dtype`. Safetensors files are
    read tensor by tensor (plain reads, no memory map) and cast as read, so peak memory stays near
    the model's own size: transformers' cast on load holds the stored and the cast copies at once
    (Florence-2-base, fp16 to bf16: 2.04x the bf16 weights; this way 1.06x, bench/bench_loading.py).
    `.bin` folders load through transformers (weights_only)."""
    import transformers

    from mgimm_core.model_formats import weight_files

    model_class = getattr(transformers, family.model_class, None)
    if model_class is None:
        raise ModelError(f"{directory}: {family.title} needs transformers' {family.model_class}, which this "
                         f"transformers ({transformers.__version__}) lacks; upgrade transformers")
    files = weight_files(Path(directory))
    if all(f.suffix == ".safetensors" for f in files):
        config = model_class.config_class.from_pretrained(directory)
        state = {name: tensor for f in files for name, tensor in _read_safetensors(f, dtype)}
        model, report = model_class.from_pretrained(None, config=config, state_dict=state, dtype=dtype,
                                                    output_loading_info=True)
        if (Path(directory) / "generation_config.json").is_file():   # its end tokens, as from_pretrained(dir) reads
            model.generation_config = transformers.GenerationConfig.from_pretrained(directory)
    else:
        model, report = model_class.from_pretrained(directory, dtype=dtype, trust_remote_code=False,
                                                    output_loading_info=True)
    check_loaded(directory, report)
    loaded: PreTrainedModel = model
    return loaded


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


def _read_safetensors(path: Path, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of a safetensors file, floating tensors cast to `dtype` one at a time."""
    import struct

    from mgimm_core.model_info import _safetensors_header

    header = _safetensors_header(path)
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        for name, entry in header.items():
            stored = _SAFETENSORS_DTYPES.get(entry["dtype"])
            if stored is None:
                raise ModelError(f"{path}: tensor {name} has dtype {entry['dtype']}, which mgimm-geo does not read")
            start, stop = entry["data_offsets"]
            handle.seek(8 + length + start)
            data = bytearray(handle.read(stop - start))
            tensor = (torch.frombuffer(data, dtype=stored) if data else torch.empty(0, dtype=stored))
            tensor = tensor.reshape(entry["shape"])
            yield name, tensor.to(dtype) if tensor.is_floating_point() else tensor


def _pil(chip: np.ndarray) -> PIL.Image.Image:
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(chip, dtype=np.uint8))
