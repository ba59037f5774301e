"""The chat-completions requests an endpoint gets for a region, and reading its answers.

One user message: the chip as a PNG data URI, then the question. Attribute questions carry the row
schema as OpenAI's `response_format` json_schema (plus the field an engine needs on top, by what
/v1/models says serves the model); temperature 0. A mgimm-geo server gets the region itself in the
`mgimm` extension field (a box, and the polygon's mask as a PNG, in chip pixels) and answers the
whole row in one JSON object from one `describe` of its model.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mgimm_core.errors import InvalidAnswerError
from mgimm_core.answers import OPENAI_EXTENSION as EXTENSION
from mgimm_core.answers import json_value_span, span_probability
from mgimm_core.service.thumbnails import encode_png

if TYPE_CHECKING:
    from mgimm_core.families.regions import BoxLike



def png_data_uri(image: np.ndarray) -> str:
    """An RGB (or grey) uint8 image as a lossless PNG data URI."""
    rgb = np.asarray(image, dtype=np.uint8)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    return "data:image/png;base64," + base64.b64encode(encode_png(rgb)).decode("ascii")


def json_schema(fields: Sequence[str]) -> dict[str, Any]:
    """The JSON schema of an answer object with these string fields, all required."""
    return {"type": "object", "properties": {name: {"type": "string"} for name in fields},
            "required": list(fields), "additionalProperties": False}


#: Fields some engines need besides response_format, by /v1/models' `owned_by`: vLLM's own form of a
#: JSON-schema constraint (older releases read only it); Ollama's native `format` (Ollama lists its
#: models as owned by their namespace, "library" by default). Unknown fields are ignored elsewhere.
ENGINE_SCHEMA_FIELDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "vllm": lambda schema: {"structured_outputs": {"json": schema}},
    "ollama": lambda schema: {"format": schema},
    "library": lambda schema: {"format": schema}}


def chat_request(served: str, question: str | None, image_uri: str, max_tokens: int, *,
                 schema: dict[str, Any] | None = None, owned_by: str | None = None,
                 regions: list[dict[str, Any]] | None = None, logprobs: bool = False) -> dict[str, Any]:
    """The request body for one question about one image. logprobs: ask for each answer token's log
    probability (OpenAI's field; vLLM and Ollama answer it, a server that does not simply leaves it out)."""
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image_uri}}]
    if question:
        content.append({"type": "text", "text": question})
    body: dict[str, Any] = {"model": served, "messages": [{"role": "user", "content": content}], "temperature": 0,
                  "max_tokens": max_tokens, "stream": False}
    if schema is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "region", "strict": True, "schema": schema}}
        extra = ENGINE_SCHEMA_FIELDS.get((owned_by or "").lower())
        if extra is not None:
            body.update(extra(schema))
    if regions is not None:
        body[EXTENSION] = {"regions": regions}
    if logprobs:
        body["logprobs"] = True
    return body


def mgimm_region(box: BoxLike, mask: np.ndarray | None, gsd_m: float | None = None) -> dict[str, Any]:
    """A region for the extension field: its box, its polygon's mask as a PNG (exact pixels), and
    the chip's GSD (a model trained with the GSD in its questions is asked as a local run asks it)."""
    region: dict[str, Any] = {"box": [float(v) for v in box]}
    if gsd_m is not None:
        region["gsd_m"] = float(gsd_m)
    if mask is not None:
        region["mask"] = png_data_uri(np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8))
    return region


def answer_text(response: dict[str, Any]) -> str:
    """The first choice's message text; InvalidAnswerError when the response has none."""
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise InvalidAnswerError(f"the endpoint's response holds no answer: {json.dumps(response)[:200]}") from None
    if isinstance(content, list):       # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def cut_short(response: dict[str, Any]) -> bool:
    """True when the endpoint stopped the answer at max_tokens (finish_reason "length")."""
    try:
        stopped: bool = response["choices"][0].get("finish_reason") == "length"
        return stopped
    except (KeyError, IndexError, TypeError, AttributeError):
        return False


def answer_object(text: str, fields: Sequence[str], *, cut: bool = False) -> dict[str, str]:
    """The answer as the schema's object: JSON, an object, every field present as text. cut: the
    endpoint stopped it at max_tokens (the error then says to raise --max-new-tokens)."""
    from mgimm_core.answers import parse_answer

    try:
        values = parse_answer(text, fields)
    except InvalidAnswerError as exc:
        if cut:
            raise InvalidAnswerError(f"{exc} (cut at the answer length; raise --max-new-tokens)") from None
        raise
    missing = [name for name in fields if name not in values]
    if missing:
        raise InvalidAnswerError(f"the answer lacks {', '.join(missing)} of the schema asked for: {text[:120]!r}")
    return values


def value_probability(response: dict[str, Any], text: str, field: str) -> float | None:
    """The served model's probability of the words of a JSON answer's string `field` (`text`: the
    answer), from the response's token log probabilities (`answers.span_probability`). None when
    the response has no log probabilities, the field is not a string in `text`, or the tokens do not
    spell `text` (nothing is guessed; tokens after it, such as the end-of-text token vLLM lists but
    leaves out of the text, are allowed)."""
    try:
        tokens = response["choices"][0]["logprobs"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    span = json_value_span(text, field)
    if not isinstance(tokens, list) or span is None:
        return None
    pieces = [_token_bytes(token) for token in tokens]
    spelled = [piece for piece in pieces if piece is not None]
    if len(spelled) != len(pieces) or not b"".join(spelled).startswith(text.encode()):
        return None
    ends = list(itertools.accumulate(len(piece) for piece in spelled))
    in_bytes = (len(text[:span[0]].encode()), len(text[:span[1]].encode()))   # tokens may split a character
    return span_probability(ends, [float(token["logprob"]) for token in tokens], in_bytes)


def _token_bytes(token: object) -> bytes | None:
    """A logprobs entry's bytes (its `bytes`, else its text in UTF-8); None for a malformed entry."""
    if not isinstance(token, dict) or not isinstance(token.get("logprob"), (int, float)):
        return None
    raw = token.get("bytes")
    if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        return bytes(raw)
    text = token.get("token")
    return text.encode() if isinstance(text, str) else None
