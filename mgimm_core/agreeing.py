"""Descriptions and attribute answers that agree with each other, decided by the model.

A region gets two answers: its attributes (stage 1, region tokens only) and its description (stage
2, global + region tokens). Trained alone, they disagree in about one row in five, and then the
description is more often the right one (docs/ablation.md). For a region whose description names
its object otherwise than the attribute answer, both readings are scored over both questions
(teacher-forced log-probabilities of the attribute answer and of the description's phrase, each
with the description question guided by that reading where the model reads guidance): the
likelier reading wins. If it is the description's, the attribute answer is decoded again limited
to that object's words (the description, which already names it so, is kept); then every
description that still names an object otherwise than its answers is decoded again from that
phrase, limited to the answer's words. Every token comes from the model's own forward passes
(mgimm_core/model/constrained_mgimm.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any


from mgimm_core.answers import GUIDE_CONFIRMED
from mgimm_core.mentions import Mention, ObjectSpec, first_disagreement, words
from mgimm_core.prompts import guided_description_prompt
from mgimm_core.vocabulary import attribute_phrase, plural, size_surface

if TYPE_CHECKING:
    from mgimm_core.describer import Describer
    from mgimm_core.steps import DescribeState

#: Re-decoding rounds of `agree` (each fixes the first phrase still disagreeing).
AGREEMENT_ROUNDS = 3


def word_start(describer: Describer, ids: list[int], word: int) -> int:
    """The index of the token where word number `word` of the decoded text begins."""
    for k in range(1, len(ids) + 1):
        if len(words(describer.decode(ids[:k]))) > word:
            return k - 1
    return len(ids)


def agreement(describer: Describer, state: "DescribeState") -> None:
    """The agreement step (after the description question, mgimm_core/steps.py): `reconcile`
    where the region's own answer is shown, then `agree` with the answers the row carries."""
    if state.attributes:
        reconcile(describer, state)
    wanted: list[tuple[ObjectSpec | None, tuple[ObjectSpec, ...]]] = []
    for result in state.results:
        held = [o for o in result.objects if o.guide_status == GUIDE_CONFIRMED]
        # the region's own answer is held only where it is shown (not for tiles or --no-attributes,
        # whose rows carry no attributes) and no confirmed guide object stands for it
        own = None if held or not state.attributes else ObjectSpec.from_attributes(result.attributes)
        wanted.append((own, tuple(s for s in (ObjectSpec.from_attributes(o.attributes) for o in held) if s)))
    agree(describer, state, wanted)
    for result, row in zip(state.results, state.ids):
        result.description = describer.decode(row)


def agree(describer: Describer, state: "DescribeState",
          wanted: Sequence[tuple[ObjectSpec | None, tuple[ObjectSpec, ...]]]) -> None:
    """Descriptions (`state.ids`, updated) that name their objects as the attribute answers do.

    wanted: per chip (own answer or None, the confirmed guide objects' answers). A description
    that does not carry them (mentions.first_disagreement) is decoded again from the phrase that
    should: the words before it are kept, the phrase may take only the answer's words (the model
    choosing among them), the rest is free. Counts are never held: a count word is the model's,
    not the number of guide polygons. Repeated while later phrases disagree, up to
    AGREEMENT_ROUNDS."""
    from mgimm_core.model.constrained_mgimm import phrase_sequences

    tokenizer = describer.processor.tokenizer
    ids = state.ids
    for _ in range(AGREEMENT_ROUNDS):
        todo = []
        for i, (own, guides) in enumerate(wanted):
            found = first_disagreement(describer.decode(ids[i]), own, guides) if own or guides else None
            if found is None:
                continue
            sequences = phrase_sequences(tokenizer, found.allowed, found.mention.plural)
            if sequences:
                todo.append((i, ids[i][:word_start(describer, ids[i], found.start)], sequences))
        if not todo:
            break
        index = [i for i, _, _ in todo]
        redone = describer.generate_ids([state.images[i] for i in index], [state.sequences[i] for i in index],
                                        [state.prompts[i] for i in index], state.questions.description_mode,
                                        state.patches[index], prefixes=[p for _, p, _ in todo],
                                        phrases=[s for _, _, s in todo])
        for i, row in zip(index, redone):
            ids[i] = row


def reading_of(mention: Mention, answer: ObjectSpec) -> ObjectSpec:
    """The object as a description's mention names it; values it leaves out (or gives twice over)
    are the attribute answer's, so both readings are scored with answers of the same length."""
    values = {key: mention.carried(key) for key in ("color", "shape", "size")}
    return ObjectSpec(mention.name, **{k: v[0] if len(v) == 1 else getattr(answer, k) for k, v in values.items()})


def _answer_text(spec: ObjectSpec, attributes: dict[str, Any]) -> str:
    """The canonical attribute answer for `spec`, with the position and orientation of `attributes`."""
    return attribute_phrase({"name": spec.name, "color": spec.color, "shape": spec.shape, "size": spec.size,
                             "orientation": attributes.get("orientation"), "position": attributes.get("position")})


def _phrase_text(spec: ObjectSpec, like: Mention) -> str:
    """`spec` in the words of a description phrase with the same adjective slots as `like`."""
    slots = [size_surface(spec.size) if like.carried("size") else None,
             spec.color if like.carried("color") else None, spec.shape if like.carried("shape") else None]
    return " ".join([w for w in slots if w] + [plural(spec.name) if like.plural else spec.name])


def reconcile(describer: Describer, state: "DescribeState") -> list[int]:
    """Regions whose description reads their object otherwise than the attribute answer, where the
    description's reading is likelier over both questions: their attribute answer is decoded again
    limited to that reading (`state.results` updated in place; the description already names it
    so). A model that reads attribute answers in its description question (`Questions.guided`) has
    each reading's phrase scored with the question guided by it; otherwise both with the same
    question. Returns the indices of the regions changed."""
    from mgimm_core.model.constrained_mgimm import phrase_sequences

    tokenizer = describer.processor.tokenizer
    q, ids, results = state.questions, state.ids, state.results

    def encode(text: str) -> list[int]:
        ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    cases: list[tuple[int, ObjectSpec, ObjectSpec, Mention]] = []
    for i, result in enumerate(results):
        own = ObjectSpec.from_attributes(result.attributes)
        if own is None or result.objects:
            continue
        found = first_disagreement(describer.decode(ids[i]), own)
        if found is None:
            continue
        reading = reading_of(found.mention, own)
        if reading != own:
            cases.append((i, own, reading, found.mention))
    if not cases:
        return []
    index = [i for i, _, _, _ in cases]
    attribute_answers, description_prompts, description_answers, scored = [], [], [], []
    for i, own, reading, mention in cases:
        prefix = ids[i][:word_start(describer, ids[i], mention.start)]
        for spec in (own, reading):
            answer = _answer_text(spec, results[i].attributes)
            attribute_answers.append(encode(answer))
            description_prompts.append(guided_description_prompt([answer], state.prompt) if q.guided
                                       else state.prompt)
            phrase = encode(_phrase_text(spec, mention))
            description_answers.append(prefix + phrase)
            scored.append(len(phrase))
    twice = [i for i in index for _ in range(2)]
    twice_images, twice_patches = [state.images[i] for i in twice], state.patches[twice]
    attribute_scores = describer.score(twice_images, [state.regions[i] for i in twice],
                                       state.asked(q.attribute, twice), q.attribute_mode, twice_patches,
                                       attribute_answers,
                                       [len(a) for a in attribute_answers])
    description_scores = describer.score(twice_images, [state.sequences[i] for i in twice],
                                         state.asked(description_prompts, twice), q.description_mode, twice_patches,
                                         description_answers, scored)
    totals = [a + d for a, d in zip(attribute_scores, description_scores)]
    switch = [(i, reading) for k, (i, _, reading, _) in enumerate(cases) if totals[2 * k + 1] > totals[2 * k]]
    if not switch:
        return []
    index = [i for i, _ in switch]
    answers = describer.generate_ids([state.images[i] for i in index], [state.regions[i] for i in index],
                                     state.asked(q.attribute, index), q.attribute_mode, state.patches[index],
                                     phrases=[phrase_sequences(tokenizer, (reading,), False, article=True)
                                              for _, reading in switch])
    for i, row in zip(index, answers):
        describer.set_attributes(results[i], describer.decode(row))
    return index


__all__ = ["AGREEMENT_ROUNDS", "agree", "agreement", "reading_of", "reconcile"]
