"""The server's model in the OpenAI chat-completions shape (GET /v1/models, POST /v1/chat/completions).

Clients built for vLLM or Ollama (the `openai` package, geoai, LibreGeoLens, mgimm-geo's own
`--model URL`) can use the served model as it is: one user message with one image as a data URI
and, optionally, a text (the description instruction). The region is the whole image unless the
`mgimm` extension field gives one, in image pixels: `{"regions": [{"box": [x1, y1, x2, y2]}]}`, a
polygon `{"polygon": [[x, y], ...]}`, or a box with its exact mask as a PNG data URI, each with
the chip's `gsd_m` where known (put before the questions of a model trained so, as a local run
does); that is how MGIMM's region tokens are reached. The answer comes from one `describe` of the served model (any
family), as the local describe loop asks it: the description as text, or, with a `response_format`
json_schema (or json_object), the row's fields the schema names as one JSON object. The response's
`mgimm` field carries the model's `object_p` and `no_object_p` of the row (null where not set).

Same boundary as the other requests: no file paths, nothing fetched (images are data URIs only).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from mgimm_core.answers import OPENAI_EXTENSION as EXTENSION
from mgimm_core.answers import OPENAI_ROW_FIELDS as ROW_FIELDS

from .protocol import ServiceError, param

if TYPE_CHECKING:
    from .handlers import Service
    from mgimm_core.answers import RegionText

#: Largest image side accepted (a chip is a few hundred pixels).
MAX_IMAGE_SIDE = 4096


def list_models(service: Service) -> dict[str, Any]:
    """GET /v1/models: the served model, with how it cuts chips and what it was trained on (its card,
    for the clients' GSD warnings), read without loading it."""
    engine = service.engine
    model = engine.model
    chip = model.chip
    return {"object": "list", "data": [{
        "id": engine.model_id, "object": "model", "created": 0, "owned_by": "mgimm-geo",
        EXTENSION: {"family": model.family.name, "region_as": model.family.region_as, "chip_size": chip.input_size,
                    "chip_context": chip.context, "chip_min_window": chip.min_window,
                    "trained_on": model.card or None}}]}


def chat_completion(service: Service, body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/chat/completions: one image, one region, the served model's answer."""
    engine = service.engine
    asked = param(body, "model", str, None)
    if asked is not None and asked != engine.model_id:
        raise ServiceError("not_found", f"model {asked!r} is not served here; this server serves "
                                        f"{engine.model_id!r} (GET /v1/models).")
    if param(body, "stream", bool, False) or param(body, "n", int, 1) != 1:
        raise ServiceError("bad_request", "streaming and n > 1 are not supported; ask for one whole answer.")
    max_tokens = param(body, "max_completion_tokens", int, None) or param(body, "max_tokens", int, None) \
        or service.max_new_tokens
    if not 1 <= max_tokens <= 1024:
        raise ServiceError("bad_request", f"max_tokens = {max_tokens} is out of range; give 1..1024.")
    image, text = _user_message(body)
    box, mask, gsd = _region(body, image.shape[1], image.shape[0])
    fields = _answer_fields(body)
    # a text answer is the description of a default row (asked with the attribute question, which MGIMM's
    # descriptions agree with); a JSON answer asks exactly the fields it names (tiles: the description alone)
    attributes = fields is None or any(f in fields for f in ROW_FIELDS[:-1])
    description = fields is None or "description" in fields
    describer = service.describer(max_tokens)
    result = describer.describe([image], [box], [mask], attributes=attributes, description=description,
                                prompt=text or None, gsds=[gsd])[0]
    if result.error is not None:
        raise result.error
    content = (result.description or "") if fields is None else json.dumps(_row(result, fields))
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": engine.model_id, "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                                    "message": {"role": "assistant", "content": content}}],
            # the model's own probabilities of its attribute answer, as a local run writes them (None: not set)
            EXTENSION: {"object_p": result.object_p, "no_object_p": result.no_object_p}}


def _user_message(body: dict[str, Any]) -> tuple[np.ndarray, str]:
    """The last user message's image (decoded, RGB) and its text parts joined."""
    messages = param(body, "messages", list, allow_none=False)
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ServiceError("bad_request", "'messages' holds no user message; send one with the chip as an "
                                          "image_url content part.")
    content = users[-1].get("content")
    parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
    images = [p for p in parts if isinstance(p, dict) and p.get("type") == "image_url"]
    if len(images) != 1:
        raise ServiceError("bad_request", f"the user message holds {len(images)} images; send exactly one "
                                          f"(the chip) as {{\"type\": \"image_url\", \"image_url\": {{\"url\": "
                                          f"\"data:image/png;base64,...\"}}}}.")
    url = images[0].get("image_url")
    url = url.get("url") if isinstance(url, dict) else url
    text = " ".join(p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text"
                    and isinstance(p.get("text"), str)).strip()
    return _decode_image(url, "image_url", rgb=True), text


def _decode_image(url: object, what: str, *, rgb: bool) -> np.ndarray:
    """A data URI's image as a uint8 array (RGB, or grey for masks); never fetched from a URL."""
    if not isinstance(url, str) or not url.startswith("data:image/"):
        raise ServiceError("forbidden", f"{what}: this server fetches nothing from the network; send the image "
                                        f"as a data URI (data:image/png;base64,...).")
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise ServiceError("bad_request", f"{what}: give the data URI base64-encoded (data:image/png;base64,...).")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ServiceError("bad_request", f"{what}: the data URI is not valid base64 ({exc}).") from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            if max(opened.size) > MAX_IMAGE_SIDE:
                raise ServiceError("bad_input", f"{what}: {opened.size[0]} x {opened.size[1]} pixels; send a chip "
                                                f"of at most {MAX_IMAGE_SIDE} pixels a side.")
            return np.asarray(opened.convert("RGB" if rgb else "L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ServiceError("bad_input", f"{what}: not a readable image ({exc}); send a PNG or JPEG.") from None


def _region(body: dict[str, Any], width: int,
            height: int) -> tuple[tuple[float, float, float, float], np.ndarray | None, float | None]:
    """(box, mask or None, the chip's GSD in metres or None) in image pixels from the extension
    field; the whole image, of unknown GSD, without one."""
    extension = body.get(EXTENSION) or {}
    regions = extension.get("regions") if isinstance(extension, dict) else None
    if not regions:
        return (0.0, 0.0, float(width), float(height)), None, None
    if not isinstance(regions, list) or len(regions) != 1 or not isinstance(regions[0], dict):
        raise ServiceError("bad_request", f"'{EXTENSION}.regions' must hold exactly one region: {{\"box\": [x1, y1, "
                                          f"x2, y2]}}, {{\"polygon\": [[x, y], ...]}} or a box with its \"mask\".")
    region = regions[0]
    mask = None
    if "polygon" in region:
        points = _numbers(region["polygon"], "polygon", pairs=True)
        if len(points) < 3:
            raise ServiceError("bad_request", f"'{EXTENSION}.regions[0].polygon' needs at least 3 points.")
        from PIL import Image, ImageDraw

        canvas = Image.new("L", (width, height), 0)
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in points], fill=255, outline=255)
        mask = np.asarray(canvas) > 0
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        box = (min(xs), min(ys), max(xs), max(ys))
    else:
        box = tuple(_numbers(region.get("box"), "box"))
        if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
            raise ServiceError("bad_request", f"'{EXTENSION}.regions[0].box' must be [x1, y1, x2, y2] with x1 < x2, "
                                              f"y1 < y2, in image pixels.")
        if region.get("mask") is not None:
            mask = _decode_image(region["mask"], f"{EXTENSION}.regions[0].mask", rgb=False) > 127
            if mask.shape != (height, width):
                raise ServiceError("bad_request", f"'{EXTENSION}.regions[0].mask' is {mask.shape[1]} x "
                                                  f"{mask.shape[0]} pixels; it must match the image ({width} x "
                                                  f"{height}).")
    x1, y1, x2, y2 = box
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise ServiceError("bad_request", f"the region {list(box)} lies outside the {width} x {height} image.")
    gsd = region.get("gsd_m")
    if gsd is not None and not (_is_number(gsd) and gsd > 0):
        raise ServiceError("bad_request", f"'{EXTENSION}.regions[0].gsd_m' must be the chip's pixel size in metres, "
                                          f"a positive number; got {gsd!r}.")
    return (float(x1), float(y1), float(x2), float(y2)), mask, (float(gsd) if gsd is not None else None)


def _numbers(value: object, what: str, pairs: bool = False) -> list[Any]:
    ok = isinstance(value, list) and all(
        (isinstance(v, list) and len(v) == 2 and all(_is_number(c) for c in v)) if pairs else _is_number(v)
        for v in value)
    if not ok:
        raise ServiceError("bad_request", f"'{EXTENSION}.regions[0].{what}' must be "
                                          f"{'[[x, y], ...]' if pairs else '[x1, y1, x2, y2]'} numbers.")
    return cast("list[Any]", value)      # a list, checked above


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _answer_fields(body: dict[str, Any]) -> tuple[str, ...] | None:
    """The row fields a JSON answer holds (json_schema's properties; json_object: all), None for text."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") in (None, "text"):
        return None
    if response_format.get("type") == "json_object":
        return ROW_FIELDS
    schema = (response_format.get("json_schema") or {}).get("schema") if response_format.get(
        "type") == "json_schema" else None
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict) or not properties:
        raise ServiceError("bad_request", "response_format: give {\"type\": \"json_schema\", \"json_schema\": "
                                          "{\"schema\": {\"properties\": ...}}}, json_object or text.")
    unknown = [name for name in properties if name not in ROW_FIELDS]
    if unknown:
        raise ServiceError("bad_request", f"response_format: this server answers the row fields "
                                          f"{', '.join(ROW_FIELDS)}; the schema asks for {', '.join(unknown)}.")
    return tuple(properties)


def _row(result: RegionText, fields: Iterable[str]) -> dict[str, Any]:
    """The answer object: attribute columns from the model's attribute answer (its `name` is the
    `object` column), the attribute answer as written, the description."""
    values: dict[str, Any] = {}
    for name in fields:
        if name == "description":
            values[name] = result.description or ""
        elif name == "attribute_text":
            values[name] = result.attribute_text or ""
        else:
            value = result.attributes.get("name" if name == "object" else name)
            values[name] = "" if value is None else str(value)
    return values
