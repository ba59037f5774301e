"""A loaded MGIMM model that answers, for region chips, an attribute phrase and a description.

This is the one place the pipeline touches torch: it resolves the device and dtype, loads weights
(safetensors, never remote code), and runs batched greedy generation for the two questions the model
was trained on (`mgimm_core.prompts`).
"""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mgimm_core.answers import RegionText
from mgimm_core.errors import MGIMMError, ModelError, UnknownWordsError
from mgimm_core.load_options import LoadOptions
from mgimm_core.prompts import ATTRIBUTE_PROMPT, DESCRIPTION_PROMPT, TEXT_REGION_PROMPTS
from mgimm_core.vocabulary import NO_OBJECT, NO_OBJECT_VALUE, parse_attributes, says_no_object

if TYPE_CHECKING:
    import torch

    from mgimm_core.families.regions import BoxLike, BoxMask
    from mgimm_core.model.modeling_mgimm import MGIMMForConditionalGeneration
    from mgimm_core.model.processing_mgimm import MGIMMProcessor
    from mgimm_core.model_dir import ModelDirectory
    from mgimm_core.steps import Questions, Step

log = logging.getLogger(__name__)

#: A guide is not found where the model gives "no distinct objects" more than this probability as
#: the attribute answer of a square around it (`Describer.guide_no_object_probabilities`). Chosen on the dev split of
#: training/benchmark.py (16 scenes, never the test split): guides on empty land confirmed 0.04 (48),
#: shifted off their object 0.03 (32), true footprints 0.50 (245; 0.10 gave the fewest true guides
#: lost for wrong guides under 10%).
GUIDE_NO_OBJECT_PROBABILITY = 0.1
#: The squares a guide is checked in: its box's longer side times these, on the same centre.
GUIDE_CHECK_SCALES = (1.0, 1.5, 2.0)


def resolve_device(device: str = "auto") -> torch.device:
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

    def __init__(self, model: MGIMMForConditionalGeneration, processor: MGIMMProcessor, model_id: str,
                 device: torch.device, *, max_new_tokens: int = 200,
                 model_dir: Path | None = None, compile: bool = False, no_repeat_ngram: int = 0,
                 agree: bool = True) -> None:
        self.model = model
        # Descriptions and attribute answers agree (mgimm_core/agreeing.py).
        self.agree = agree
        # Static KV cache: fixed-shape decode steps, which transformers compiles (torch.compile of
        # the forward) on CUDA; on CPU it only preallocates the cache (same tokens, no compile).
        self.generate_options: dict[str, Any] = {"cache_implementation": "static"} if compile else {}
        if no_repeat_ngram:
            # Opt-in only: no n-gram of new tokens twice. It breaks phrases ("building in in the
            # centre"): the word completing a repeated n-gram is forbidden mid-phrase. The default
            # guard is `constrained_mgimm.RepetitionGuard` + `trim_repeats` (see `generate_ids`).
            self.generate_options["no_repeat_ngram_size"] = int(no_repeat_ngram)
        self._word_tokens: Any = None      # constrained_mgimm.word_tokens (a tensor), built on first use
        self._repeat_marks: Any = None     # constrained_mgimm.RepeatMarks, built on first use
        self._checked_prompts: set[str] = set()
        self.model_dir = model_dir
        self.processor = processor
        self.model_id = model_id
        self.device = device
        self.max_new_tokens = max_new_tokens

    @classmethod
    def load(cls, model_dir: str | Path | None = None, *, device: str = "auto",
             max_new_tokens: int = 200, compile: bool = False, vision: str | Path | None = None,
             no_repeat_ngram: int = 0, agree: bool = True) -> Any:     # the family's describer
        """Load a saved model directory (default: the demo model shipped inside the package) with
        its family's describer (`load_describer`): a Describer for MGIMM and the LLaVA-1.5 line."""
        return load_describer(model_dir, vision=vision, options=LoadOptions(
            device=device, max_new_tokens=max_new_tokens, compile=compile, no_repeat_ngram=no_repeat_ngram,
            agree=agree))

    @property
    def description_mode(self) -> str:
        """The sequence layout of the description question: global + region tokens (stage 2), or
        global tokens alone for models trained so (config mode "global": the ablation's
        global-only variant, the path of the reference's shipped fine-tune script)."""
        return "global" if getattr(self.model.config, "mode", None) == "global" else "global_region"

    @property
    def chip_size(self) -> int:
        """Model input side in pixels: the geo core reads larger regions decimated to this."""
        return int(self.processor.image_size)

    def patches(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The chips' vision features: the vision tower runs once per chip for every question."""
        import torch

        pixels = torch.stack([self.processor.preprocess_image(chip) for chip in images]).to(self.device)
        with torch.inference_mode():
            return self.model.patch_features(pixels.to(self.model.dtype))

    def inputs(self, images: Sequence[np.ndarray], regions: Sequence[Sequence[BoxMask]], prompts: str | Sequence[str],
               mode: str) -> dict[str, Any]:
        """The model inputs of one question per chip, on the device; the chips' pixels are left out
        (their vision features, `patches`, are computed once per chip) unless the model's region
        tokens look at the pixels themselves (a zoomed view, a CNN: `config.region_needs_pixels`).
        prompts: as asked (with the chip's GSD phrase for a model trained so: `DescribeState.asked`)."""
        batch = self.processor(images, boxes=[np.asarray([b for b, _ in r], dtype=np.float32).reshape(-1, 4)
                                              for r in regions],
                               masks=[[m for _, m in r] for r in regions], prompts=prompts, mode=mode)
        keep_pixels = getattr(self.model.config, "region_needs_pixels", False)
        return {k: v.to(self.device) for k, v in batch.items() if keep_pixels or k != "pixel_values"}

    def generate_ids(self, images: Sequence[np.ndarray], regions: Sequence[Sequence[BoxMask]],
                     prompts: str | Sequence[str], mode: str, patches: torch.Tensor,
                     prefixes: list[list[int]] | None = None,
                     phrases: list[list[tuple[int, ...]] | None] | None = None,
                     floor: Any = None) -> list[list[int]]:
        """One answer's token ids per chip. regions: per chip a list of (box, mask) in chip pixels;
        prompts: one string or one per chip; patches: the chips' `patches`. prefixes: per chip the
        answer tokens to continue from (kept in the result); phrases: per chip the token sequences
        its next phrase must follow (constrained_mgimm.PhraseConstraint); floor: a
        constrained_mgimm.FirstTokenFloor for the answer's first token (it keeps its probabilities).

        The repetition guard is always on: no word right after itself (RepetitionGuard, a forbidden
        token), and an answer cut before a sentence it already said, or back to its last full sentence
        where words without an end mark follow it (budget cut or the model's own), and a clause it
        already said, or a list item repeated but for its count, dropped with its mark (trim_repeats:
        whole sentences, clauses and items of its own dropped)."""
        from transformers import LogitsProcessor, LogitsProcessorList

        from mgimm_core.model.constrained_mgimm import (PhraseConstraint, RepeatMarks, RepetitionGuard,
                                                        append_tokens, trim_repeats, word_tokens)

        tokenizer = self.processor.tokenizer
        if self._word_tokens is None:
            self._word_tokens = word_tokens(tokenizer)
            self._repeat_marks = RepeatMarks.of(tokenizer, self._word_tokens)
        batch = self.inputs(images, regions, prompts, mode)
        options = dict(self.generate_options)
        budget = self.max_new_tokens
        if prefixes is not None:
            batch["input_ids"], batch["attention_mask"] = append_tokens(
                batch["input_ids"], batch["attention_mask"], prefixes, self._pad_id)
            budget = max(1, self.max_new_tokens - min(len(p) for p in prefixes))
        kept = prefixes if prefixes is not None else [[] for _ in images]
        processors: list[LogitsProcessor] = [RepetitionGuard(self._word_tokens, kept,
                                                             frozenset(tokenizer.all_special_ids))]
        if phrases is not None:       # after the guard: a phrase it leaves no token for gives way
            processors.append(PhraseConstraint(phrases))
        if floor is not None:
            processors.append(floor)
        options["logits_processor"] = LogitsProcessorList(processors)
        ids = self.model.generate(**batch, patches=patches, mode=mode, max_new_tokens=budget, **options)
        rows = [list(prefix) for prefix in prefixes] if prefixes is not None else [[] for _ in images]
        eos = tokenizer.eos_token_id
        for k, (row, new) in enumerate(zip(rows, ids.tolist())):
            # an answer ends at its end-of-sequence token (generation pads after it); a pad token the
            # model itself chose mid-answer stays, as the model saw it (decoding skips it)
            end = next((j for j, token in enumerate(new) if token == eos), len(new))
            row.extend(new[:end])
            del row[self.max_new_tokens:]
            rows[k] = trim_repeats(row, self._repeat_marks)
        return rows

    @property
    def _pad_id(self) -> int:
        tokenizer = self.processor.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    def decode(self, ids: list[int]) -> str:
        return self.processor.batch_decode([ids])[0] if ids else ""

    def score(self, images: Sequence[np.ndarray], regions: Sequence[Sequence[BoxMask]], prompts: str | Sequence[str],
              mode: str, patches: torch.Tensor, answers: list[list[int]],
               scored: list[int]) -> list[float]:
        """Per chip, the summed log-probability of the last `scored` tokens of `answers` after
        its question (teacher-forced: one forward pass, no generation)."""
        import torch

        from mgimm_core.model.constrained_mgimm import append_tokens

        batch = self.inputs(images, regions, prompts, mode)
        ids, attention = append_tokens(batch["input_ids"], batch["attention_mask"], answers, self._pad_id)
        with torch.inference_mode():
            embeds = self.model.embed_inputs(ids, batch.get("pixel_values"), batch["region_boxes"],
                                             batch.get("region_masks"), batch["region_valid"], mode, patches)
            logits = self.model(inputs_embeds=embeds, attention_mask=attention, mode=mode).logits
            # only the positions that predict a scored token (answers end together: left padding), so
            # a large vocabulary's float copy stays the size of the answers, not of the sequence
            last = max(scored, default=0)
            logprobs = torch.log_softmax(logits[:, -last - 1:-1].float(), dim=-1) if last else None
        totals = []
        length = ids.shape[1]
        for row, n in enumerate(scored):
            if n == 0 or logprobs is None:
                totals.append(0.0)
                continue
            positions = torch.arange(length - n, length, device=ids.device)
            totals.append(float(logprobs[row, positions - 1 - (length - last - 1), ids[row, positions]].sum()))
        return totals

    def word_probabilities(self, images: Sequence[np.ndarray], regions: Sequence[Sequence[BoxMask]],
                           prompts: Sequence[str], mode: str, patches: torch.Tensor, answers: Sequence[str],
                           spans: Sequence[tuple[int, int] | None]) -> list[float | None]:
        """Per chip, the model's probability of the words at `spans` ((start, end) characters) of its
        answer text, given its question and the answer's words before them: `score` of the answer
        cut after those words, on their tokens. None where a span is None, or where the words'
        tokens are not a continuation of the tokens before them (a tokenizer merging across them)."""
        rows: list[list[int]] = []
        scored: list[int] = []
        keep: list[int] = []
        for k, (text, span) in enumerate(zip(answers, spans)):
            cut = span_tokens(self.processor.tokenizer, text, span) if span is not None else None
            if cut is not None:
                rows.append(cut[0])
                scored.append(cut[1])
                keep.append(k)
        out: list[float | None] = [None] * len(answers)
        if keep:
            totals = self.score([images[k] for k in keep], [regions[k] for k in keep], [prompts[k] for k in keep],
                                mode, patches[keep], rows, scored)
            for k, total in zip(keep, totals):
                out[k] = math.exp(total)
        return out

    def unknown_words(self, text: str) -> list[str]:
        """Words of `text` the tokenizer can only read as unknown (word-level vocabularies such as
        the demo model's), in order, without repeats; [] for tokenizers that encode any text."""
        tokenizer = self.processor.tokenizer
        unk = tokenizer.unk_token_id
        if unk is None or not getattr(tokenizer, "is_fast", False):
            return []
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        found: list[str] = []
        for token, (start, stop) in zip(encoded["input_ids"], encoded["offset_mapping"]):
            word = text[start:stop]
            if token == unk and word and word not in found:
                found.append(word)
        return found

    def check_prompt(self, prompt: str | None, strict: bool = False) -> list[str]:
        """Warn (once per prompt) about words the model does not know; with strict, refuse them."""
        if not prompt:
            return []
        unknown = self.unknown_words(prompt)
        if unknown and prompt not in self._checked_prompts:
            self._checked_prompts.add(prompt)
            message = (f"the prompt has {len(unknown)} word(s) model {self.model_id} does not know: "
                       f"{', '.join(unknown)}; it reads them as unknown tokens, so the answer may ignore "
                       f"them (`mgimm-geo model-info --words` lists the words it knows)")
            if strict:
                raise UnknownWordsError(message[0].upper() + message[1:] + ".", "prompt", unknown)
            log.warning(message)
        return unknown

    @property
    def questions(self) -> "Questions":
        """How this model is asked (mgimm_core/steps.py `Questions`): MGIMM's two trained questions
        on region tokens, or for the LLaVA-1.5 line the whole chip with the region as box text
        (`TEXT_REGION_PROMPTS`), in global mode."""
        from mgimm_core.steps import Questions

        region_prompt = getattr(self.model.config, "region_prompt", "tokens")
        if region_prompt != "tokens":
            attribute, description = TEXT_REGION_PROMPTS[region_prompt]
            return Questions(attribute, description, "global", "global", region_tokens=False, guided=False)
        return Questions(ATTRIBUTE_PROMPT, DESCRIPTION_PROMPT, "region", self.description_mode, region_tokens=True,
                         guided=bool(getattr(self.processor, "guided_descriptions", False)))

    def steps(self, *, attributes: bool = True, description: bool = True, guides: bool = False) -> list["Step"]:
        """The steps (mgimm_core/steps.py) a describe call runs, in order: the region's attribute
        question (also when only a guided description question needs it), each guide object's,
        the guide check and the agreement (region tokens only: they score the attribute question
        on squares and phrases), the description question, and last how sure the
        model was of each object class its attribute answers name (`object_p`)."""
        from mgimm_core import steps
        from mgimm_core.agreeing import agreement

        questions = self.questions
        chosen: list[Step] = []
        if attributes or (questions.guided and description):
            chosen.append(steps.ask_attributes)
        if guides:
            chosen.append(steps.ask_guides)
            if questions.region_tokens:
                chosen.append(steps.judge_guides)
        if description:
            chosen.append(steps.ask_description)
            if self.agree and questions.region_tokens:
                chosen.append(agreement)
        if attributes or guides:
            chosen.append(steps.score_objects)      # last: on the answers as the agreement left them
        return chosen

    def describe(self, images: Sequence[np.ndarray], boxes: Sequence[BoxLike], masks: Sequence[np.ndarray | None],
                 *, attributes: bool = True, description: bool = True, prompt: str | None = None,
                 guides: Sequence[Sequence[BoxMask]] | None = None, guides_left: Sequence[int] | None = None,
                 strict: bool = False, gsds: Sequence[float | None] | None = None) -> list[RegionText]:
        """Answer the attribute question (region tokens only, as trained in stage 1) and the
        description question (global + region tokens, stage 2) for each chip, by running `steps`
        on one `DescribeState`.

        guides: per chip a list of (box, mask) of guide objects (the paper's multi-region mode):
        each gets its own attribute answer and a `guide_status` (`guide_no_object_probabilities`: confirmed where
        the model sees an object there, else not_found) in `RegionText.objects`; the chip's
        description sees the region and every confirmed guide as region prompts in one sequence.
        Models trained with attribute-guided descriptions (processor.guided_descriptions) get the
        attribute answers (the confirmed guides', else the region's own) in the description
        question, so the description agrees with them (and, with `agree`, mgimm_core/agreeing.py
        holds it to them). guides_left (guide objects inside beyond those given) is accepted for
        the callers' protocol; counts are the model's own, so it is not used. The vision tower
        runs once per chip for every question. gsds: per chip its GSD in metres (`RegionChip.gsd_m`),
        put before every question about the chip for a model trained so (processor.gsd_prompt),
        ignored otherwise."""
        from mgimm_core.steps import DescribeState

        if not images:
            return []
        if gsds is None or not getattr(self.processor, "gsd_prompt", False):
            gsds = [None] * len(images)
        results = [RegionText() for _ in images]
        self.check_prompt(prompt, strict)
        questions = self.questions
        state = DescribeState(images=images, regions=[[(box, mask)] for box, mask in zip(boxes, masks)],
                              guides=guides if guides is not None else [[] for _ in images],
                              patches=self.patches(images), questions=questions, attributes=attributes,
                              prompt=prompt or questions.description, results=results,
                              answers=results if attributes else [RegionText() for _ in images], gsds=gsds)
        for step in self.steps(attributes=attributes, description=description, guides=guides is not None):
            step(self, state)
        return results

    def guide_no_object_probabilities(self, images: Sequence[np.ndarray], guides: Sequence[BoxMask],
                                      patches: torch.Tensor, prompts: Sequence[str]) -> list[float]:
        """Per guide object (one chip each, its (box, mask) in chip pixels), how sure the model is that
        nothing is there. Its answer for the guide polygon cannot tell: asked about a region shaped
        like an object, the demo model names one on empty land too (98-100% of guides). So the guide
        is judged by the answer the model was trained to give for squares with nothing in them: the
        teacher-forced probability that the attribute answer of a square around the guide (its box
        times each of GUIDE_CHECK_SCALES) begins "no distinct objects", the highest of them. One
        forward pass per square, no generation. Above `guide_threshold` the guide is not found.
        prompts: per guide its attribute question as asked (`DescribeState.asked`)."""
        if not guides:
            return []
        tokenizer = self.processor.tokenizer
        answer = tokenizer(NO_OBJECT, add_special_tokens=False)["input_ids"]
        squares, owners = [], []
        for k, (image, (box, _)) in enumerate(zip(images, guides)):
            x0, y0, x1, y1 = (float(v) for v in box)
            h, w = image.shape[:2]
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            for scale in GUIDE_CHECK_SCALES:
                half = max(x1 - x0, y1 - y0, 1.0) * scale / 2
                squares.append([((max(0.0, cx - half), max(0.0, cy - half), min(float(w), cx + half),
                                  min(float(h), cy + half)), None)])
                owners.append(k)
        scores = self.score([images[k] for k in owners], squares, [prompts[k] for k in owners], "region",
                            patches[owners], [answer] * len(squares), [len(answer)] * len(squares))
        highest = [0.0] * len(guides)
        for k, score in zip(owners, scores):
            highest[k] = max(highest[k], math.exp(score))
        return highest

    def no_object_floor(self) -> Any:
        """The floor under the region's "no distinct objects" answer (constrained_mgimm.FirstTokenFloor
        on its first token): the model folder's own `no_object_probability` (its processor's, chosen
        on a dev split by training/thresholds.py), else 0 (never forbids; it still measures)."""
        from mgimm_core.model.constrained_mgimm import FirstTokenFloor

        token = self.processor.tokenizer(NO_OBJECT, add_special_tokens=False)["input_ids"][0]
        return FirstTokenFloor(token, float(getattr(self.processor, "no_object_probability", None) or 0.0))

    @property
    def guide_threshold(self) -> float:
        """The "no distinct objects" probability above which a guide is not found: the model
        folder's own (its processor's guide_no_object_probability), else GUIDE_NO_OBJECT_PROBABILITY."""
        return float(getattr(self.processor, "guide_no_object_probability", None) or GUIDE_NO_OBJECT_PROBABILITY)

    @staticmethod
    def set_attributes(result: "RegionText", text: str) -> None:
        result.attribute_text = text
        # "no distinct objects, mainly farmland": the object column says none (not a guessed class)
        result.attributes = {"name": NO_OBJECT_VALUE} if says_no_object(text) else {
            k: v for k, v in parse_attributes(text).items() if v is not None}


def span_tokens(tokenizer: Any, text: str, span: tuple[int, int]) -> tuple[list[int], int] | None:
    """(the token ids of `text` up to the end of `span`, how many of them are the span's words), for
    scoring the span after the words before it (`Describer.word_probabilities`); None for an empty
    span, or where a tokenizer merges across the span's start so its tokens do not continue those
    before it. The spaces before the span belong to its first token, as word-level, byte-level BPE
    and SentencePiece vocabularies all write them."""
    if span[1] <= span[0]:
        return None
    before = tokenizer(text[:span[0]].rstrip(" "), add_special_tokens=False)["input_ids"]
    through = tokenizer(text[:span[1]], add_special_tokens=False)["input_ids"]
    if len(through) <= len(before) or through[:len(before)] != before:
        return None
    return through, len(through) - len(before)


def load_describer(model_dir: str | Path | ModelDirectory | None = None, *, vision: str | Path | None = None,
                   options: LoadOptions | None = None) -> Any:     # the family's describer
    """The describer of a model folder (default: the demo model), as its family loads it
    (mgimm_core/families): a `Describer` for MGIMM and the LLaVA-1.5 line, the family's own for the
    others; all answer `describe` the same way.

    options: mgimm_core.load_options.LoadOptions (device, max_new_tokens, compile: decode with a static
    KV cache and a compiled forward on CUDA, same greedy tokens; no_repeat_ngram; agree: descriptions
    and attribute answers are made to agree, mgimm_core/agreeing.py; region_as). vision: the local
    vision-tower directory of an original-format LLaVA/GeoChat checkpoint (default: its
    `mm_vision_tower`, as a path or in the Hugging Face cache).
    """
    from mgimm_core.model_dir import ModelDirectory

    options = options or LoadOptions()
    model = ModelDirectory.resolve(model_dir, vision)
    torch_device = resolve_device(options.device)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stdout/stderr stay for our own progress and JSON
    directory = model.path
    try:
        describer = model.family.load(model.kind, torch_device, options)
    except pickle.UnpicklingError as exc:       # torch.load(weights_only=True) refused a pickled object
        raise ModelError(f"{directory}: its .bin weights hold pickled Python objects, not only tensors, "
                         f"and mgimm-geo never unpickles code (torch.load with weights_only=True refused "
                         f"them). Convert them to safetensors where you trust the file "
                         f"(safetensors.torch.save_file), or use the model's safetensors release.") from exc
    except MGIMMError:
        raise
    except Exception as exc:   # the folder's files broke a library's loader (crafted or damaged): a model error
        raise ModelError(f"{directory}: cannot load the model ({type(exc).__name__}: {exc}); the model folder is "
                         f"damaged or not what its config.json says, copy or export it again") from exc
    describer.model_id = model.model_id
    return describer
