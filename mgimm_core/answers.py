"""Reading a general VLM's JSON attribute answer into a row's attributes (no torch: the local
describer of transformers-native families and the endpoint describer both read answers here)."""

from __future__ import annotations

import json

from mgimm_core.errors import InvalidAnswerError
from mgimm_core.vocabulary import NO_OBJECT_VALUE

#: Answers a model gives for "no object stands out", read as the row's `none`.
NO_OBJECT_ANSWERS = ("none", "no object", "nothing")


def parse_answer(text: str, fields) -> dict[str, str]:
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
