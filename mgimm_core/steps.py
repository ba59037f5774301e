"""The questions of one `Describer.describe` call, as a list of steps on one shared batch state.

Each step does one job on a `DescribeState` and uses only the describer's public surface
(`patches`, `generate_ids`, `score`, `decode`, `set_attributes`, `guide_no_object_probabilities`,
`word_probabilities`): the region's attribute question (`ask_attributes`), each guide object's
(`ask_guides`), the guide check that sets `guide_status` (`judge_guides`), the description question
(`ask_description`), the agreement (mgimm_core/agreeing.py `agreement`) and how sure the model was
of the object classes its answers name (`score_objects`). `Describer.steps` picks them for a call;
`Describer.describe` builds the state and runs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from mgimm_core.answers import GUIDE_CONFIRMED, GUIDE_NOT_FOUND, RegionText
from mgimm_core.prompts import ATTRIBUTE_PROMPT, guided_description_prompt, with_gsd
from mgimm_core.vocabulary import NO_OBJECT_VALUE, attribute_term

if TYPE_CHECKING:
    import numpy as np

    from mgimm_core.describer import Describer
    from mgimm_core.families.regions import BoxMask


@dataclass(frozen=True)
class Questions:
    """How a model is asked: its two questions and the sequence layout ("mode") of each.

    region_tokens: regions reach the model as learned region tokens (MGIMM), so the guide check
    and the agreement apply; otherwise as box text in the question (the LLaVA-1.5 line,
    `TEXT_REGION_PROMPTS`). guided: the description question carries attribute answers
    (processor.guided_descriptions)."""

    attribute: str
    description: str
    attribute_mode: str
    description_mode: str
    region_tokens: bool
    guided: bool


@dataclass
class DescribeState:
    """One batch of chips as the steps share it: the inputs, then what each step adds."""

    images: Sequence[np.ndarray]
    regions: list[list[BoxMask]]   # per chip [(box, mask)] of the region, in chip pixels
    guides: Sequence[Sequence[BoxMask]]   # per chip the (box, mask) of its guide objects
    patches: Any                   # the chips' vision features (Describer.patches): computed once
    questions: Questions
    attributes: bool               # the region's own attribute answer is shown in its result
    prompt: str                    # the description question (the caller's prompt or the model's own)
    results: list[RegionText]
    answers: list[RegionText]      # the regions' own attribute answers: `results` where shown, else apart
    gsds: Sequence[float | None]   # per chip its GSD phrase's metres, None for none (models without gsd_prompt)
    prompts: list[str] = field(default_factory=list)          # per chip, its description question as asked
    sequences: list[list[BoxMask]] = field(default_factory=list)       # per chip, its description's region prompts
    ids: list[list[int]] = field(default_factory=list)        # per chip, its description's token ids

    def asked(self, prompts: str | Sequence[str], index: Sequence[int]) -> list[str]:
        """The question(s) as asked of the chips of `index` (one, or one per chip): each preceded by
        its chip's GSD phrase where the model was trained so (every question about a chip is)."""
        each = [prompts] * len(index) if isinstance(prompts, str) else list(prompts)
        return [with_gsd(p, self.gsds[i]) for p, i in zip(each, index)]

    def guide_objects(self) -> list[tuple[int, BoxMask, RegionText]]:
        """(chip index, guide (box, mask), its answer) of every guide object answered, in order."""
        return [(i, guide, obj) for i, (chip_guides, result) in enumerate(zip(self.guides, self.results))
                for guide, obj in zip(chip_guides, result.objects)]


Step = Callable[["Describer", DescribeState], None]


def _ask(describer: "Describer", state: DescribeState, index: list[int], regions: Sequence[Sequence[BoxMask]],
         prompts: str | Sequence[str], mode: str, floor: Any = None) -> list[str]:
    """One greedy answer per chip of `index` with its regions (floor: Describer.generate_ids')."""
    ids = describer.generate_ids([state.images[i] for i in index], regions, state.asked(prompts, index), mode,
                                 state.patches[index], floor=floor)
    return [describer.decode(row) for row in ids]


def ask_attributes(describer: "Describer", state: DescribeState) -> None:
    """The region's attribute question, into `state.answers`: the results where attributes are shown;
    otherwise it only guides the description question (guided models) and is not in the result.
    On region tokens, each answer's `no_object_p` is the model's probability that it begins "no
    distinct objects", and that answer is forbidden below the model's floor (`Describer.no_object_floor`)."""
    q = state.questions
    floor = describer.no_object_floor() if q.region_tokens else None
    texts = _ask(describer, state, list(range(len(state.images))), state.regions, q.attribute, q.attribute_mode,
                 floor)
    for k, (answer, text) in enumerate(zip(state.answers, texts)):
        describer.set_attributes(answer, text)
        if floor is not None and floor.probabilities:
            answer.no_object_p = floor.probabilities[k]


def ask_guides(describer: "Describer", state: DescribeState) -> None:
    """Each guide object's attribute question, the guide's (box, mask) as the region: one
    `RegionText` per guide in its chip's `objects`, in order."""
    flat = [(i, guide) for i, chip_guides in enumerate(state.guides) for guide in chip_guides]
    if not flat:
        return
    q = state.questions
    texts = _ask(describer, state, [i for i, _ in flat], [[guide] for _, guide in flat], q.attribute,
                 q.attribute_mode)
    for (i, _), text in zip(flat, texts):
        obj = RegionText()
        describer.set_attributes(obj, text)
        state.results[i].objects.append(obj)


def judge_guides(describer: "Describer", state: DescribeState) -> None:
    """Each guide object's `guide_status`: confirmed where the model sees an object there (its
    "no distinct objects" probability, `guide_no_object_p`, at most `Describer.guide_threshold`)
    and its own answer names one, else not found."""
    flat = state.guide_objects()
    if not flat:
        return
    index = [i for i, _, _ in flat]
    empty = describer.guide_no_object_probabilities([state.images[i] for i in index],
                                                    [guide for _, guide, _ in flat], state.patches[index],
                                                    state.asked(ATTRIBUTE_PROMPT, index))
    threshold = describer.guide_threshold
    for (_, _, obj), p_empty in zip(flat, empty):
        obj.guide_no_object_p = p_empty
        there = p_empty <= threshold and obj.attributes.get("name") != NO_OBJECT_VALUE
        obj.guide_status = GUIDE_CONFIRMED if there else GUIDE_NOT_FOUND


def ask_description(describer: "Describer", state: DescribeState) -> None:
    """The description question. It sees the region and every confirmed guide as region prompts in
    one sequence; a guided model's question carries the confirmed guides' attribute answers, else
    the region's own."""
    state.sequences, state.prompts = [], []
    for region, chip_guides, result, own in zip(state.regions, state.guides, state.results, state.answers):
        confirmed = [(guide, obj) for guide, obj in zip(chip_guides, result.objects)
                     if obj.guide_status == GUIDE_CONFIRMED]
        state.sequences.append(region + [guide for guide, _ in confirmed])
        shown = [obj.attribute_text for _, obj in confirmed] or [own.attribute_text]
        state.prompts.append(guided_description_prompt(shown, state.prompt) if state.questions.guided
                             else state.prompt)
    state.prompts = state.asked(state.prompts, range(len(state.images)))
    state.ids = describer.generate_ids(state.images, state.sequences, state.prompts,
                                       state.questions.description_mode, state.patches)
    for result, row in zip(state.results, state.ids):
        result.description = describer.decode(row)


def score_objects(describer: "Describer", state: DescribeState) -> None:
    """Each shown attribute answer's and each guide object's `object_p`: the model's probability of
    the words naming the object class, given the attribute question and the answer's words before
    them (teacher-forced on the answer as it stands, after the agreement may have decoded it again,
    so it is also low where a constraint overruled the model). A user can keep the regions the model
    was sure of (docs/benchmark.md "How sure the model is"). Not set for "no distinct objects"
    answers (`no_object_p` is theirs) nor for answers naming no class."""
    shown = [(i, state.regions[i], r) for i, r in enumerate(state.results)] if state.attributes else []
    items = [(i, regions, text) for i, regions, text in shown + [(i, [g], o) for i, g, o in state.guide_objects()]
             if text.attribute_text and text.attributes.get("name") not in (None, NO_OBJECT_VALUE)]
    if not items:
        return
    index = [i for i, _, _ in items]
    terms = [attribute_term(text.attribute_text or "", "name") for _, _, text in items]
    q = state.questions
    probabilities = describer.word_probabilities(
        [state.images[i] for i in index], [regions for _, regions, _ in items], state.asked(q.attribute, index),
        q.attribute_mode, state.patches[index], [text.attribute_text or "" for _, _, text in items],
        [(term[1], term[2]) if term else None for term in terms])
    for (_, _, text), p in zip(items, probabilities):
        text.object_p = p


__all__ = ["DescribeState", "Questions", "Step", "ask_attributes", "ask_description", "ask_guides", "judge_guides",
           "score_objects"]
