"""What a model answered about a region (`RegionText`, a guide object's judgement) and reading a
general VLM's JSON attribute answer into a row's attributes (no torch: every describer, the steps of
a describe and the endpoint describer share these)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mgimm_core.errors import InvalidAnswerError, MGIMMError
from mgimm_core.output.schema import DEFAULT_ATTRIBUTE_FIELDS
from mgimm_core.vocabulary import NO_OBJECT_VALUE

#: The OpenAI-compatible API's extension field (docs/protocol.md): regions in a chat request to
#: mgimm-geo serve, and its model's facts in /v1/models.
OPENAI_EXTENSION = "mgimm"
#: What mgimm-geo serve answers for a whole row: the attribute columns, the attribute answer as the
#: model wrote it, and the description.
OPENAI_ROW_FIELDS = DEFAULT_ATTRIBUTE_FIELDS + ("attribute_text", "description")

#: A guide object's judgement (`RegionText.guide_status`, the objects layer's `guide_status`).
GUIDE_CONFIRMED, GUIDE_NOT_FOUND = "confirmed", "not_found"

#: The row schema's attribute fields as a JSON answer names them (object -> the `object` column).
ATTRIBUTE_FIELDS = ("object", "color", "shape", "size", "orientation")

#: Answers a model gives for "no object stands out", read as the row's `none`.
NO_OBJECT_ANSWERS = ("none", "no object", "nothing")


@dataclass
class RegionText:
    """What the model said about one region."""

    description: str | None = None
    attribute_text: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    objects: list["RegionText"] = field(default_factory=list)   # one per guide object, in order
    error: MGIMMError | None = None    # an answer that could not be read (its row carries the code)
    guide_status: str | None = None        # a guide object's: GUIDE_CONFIRMED or GUIDE_NOT_FOUND
    guide_no_object_p: float | None = None  # ... and the model's probability that nothing is there
    no_object_p: float | None = None   # a region's own: the probability its answer begins "no distinct objects"
    object_p: float | None = None      # the probability of the object class its answer names (steps.score_objects)


def parse_answer(text: str, fields: Iterable[str]) -> dict[str, str]:
    """The answer's values by field; InvalidAnswerError when it is not the JSON object asked for."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(body)
    except ValueError:
        raise InvalidAnswerError(f"the attribute answer is not JSON: {text[:120]!r}") from None
    if not isinstance(data, dict):
        raise InvalidAnswerError(f"the attribute answer is JSON but not an object: {text[:120]!r}")
    return {name: str(data[name]).strip() for name in fields if isinstance(data.get(name), (str, int, float))}


def row_attributes(values: dict[str, str]) -> dict[str, str]:
    """A parsed answer as the row's attributes (`object` is the vocabulary's `name`; empty values
    dropped; "none"/"nothing" is the row's no-object value)."""
    attributes = {("name" if k == "object" else k): v for k, v in values.items() if v}
    if attributes.get("name", "").lower() in NO_OBJECT_ANSWERS:
        attributes["name"] = NO_OBJECT_VALUE
    return attributes


def json_value_span(text: str, field: str) -> tuple[int, int] | None:
    """The character span of the (first) string value of `field` in a JSON answer, inside its
    quotes; None where the field has no non-empty string value in `text`."""
    match = re.search(rf'"{re.escape(field)}"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
    return None if match is None or match.start(1) == match.end(1) else match.span(1)


def span_probability(token_ends: Sequence[int], logprobs: Sequence[float], span: tuple[int, int]) -> float:
    """The product of the probabilities of the tokens that overlap `span` (token i covers
    token_ends[i - 1] .. token_ends[i] of the answer, in the span's units): how sure the model
    was of those words, as `object_p` reports it for every family (docs/protocol.md)."""
    start, end = span
    total, previous = 0.0, 0
    for token_end, logprob in zip(token_ends, logprobs):
        if previous < end and token_end > start:
            total += logprob
        previous = max(previous, token_end)
    return math.exp(total)
