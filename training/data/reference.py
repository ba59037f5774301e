"""Readers for the reference MGIMM dataset files, read as they are (docs/training.md).

- region file, COCO-like: `images: [{id, file_name, width, height}]`,
  `annotations: [{image_id, bbox: [x, y, w, h], caption}]` -> one `RegionSample` per annotation;
- description files: a list of `{image_id, file_name, width, height, bbox: [[x, y, w, h], ...],
  conversations: [{from: human, value: "<image>\\n..."}, {from: gpt, value: "..."}]}`
  -> one `DescriptionSample` per entry;
- the evaluation question file (a list of `{image_id, file_name, text, bbox: [[x, y, w, h], ...]}`,
  sizes optional) -> `Question`s;
- the COCO-caption ground truth used for scoring -> {image_id: [captions]}.

Boxes come in as [x, y, w, h] pixels and leave as (x1, y1, x2, y2) pixels. Images are looked up as
`image_root / file_name`, `image_root` defaulting to the annotation file's folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from training.data import validate as v
from training.data.records import (REGION_INSTRUCTION, Box, DescriptionSample, ReadResult,
                                   RegionSample)

IMAGE_PLACEHOLDER = "<image>"
T = TypeVar("T")


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise v.BadRecordError(path, f"line {exc.lineno}", v.MALFORMED,
                               f"the file is not valid JSON ({exc.msg})") from None


def _list_file(path, image_root, on_bad: str, what: str) -> tuple[Path, list, v.BadRecords]:
    """(image root, records, bad-record policy) of a JSON file holding a list of `what`."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    data = _load_json(path)
    if not isinstance(data, list):
        raise v.BadRecordError(path, "top level", v.MALFORMED, f"expected a list of {what}")
    return root, data, v.BadRecords(path, on_bad)


def _read_records(policy: v.BadRecords, records: list, kind: str, read: Callable[[int, Any], T]) -> list[T]:
    """`read(index, record)` of each record; a record whose read raises RecordProblem goes to `policy`
    as `<kind> <index> (image_id ...)` (raised, or skipped and counted)."""
    kept: list[T] = []
    for index, record in enumerate(records):
        try:
            item = read(index, record)
        except v.RecordProblem as p:
            image_id = record.get("image_id") if isinstance(record, dict) else None
            policy.bad(f"{kind} {index} (image_id {image_id})", p.reason, p.detail)
            continue
        kept.append(item)
        policy.kept()
    return kept


def _coco_polygon(segmentation, width, height, tolerance_px):
    """The first polygon of a COCO `segmentation` ([[x1, y1, x2, y2, ...]]), or None if absent."""
    if not segmentation:
        return None
    if not isinstance(segmentation, list) or not isinstance(segmentation[0], list):
        raise v.RecordProblem(v.MALFORMED, "segmentation is not a list of polygons "
                                           "(RLE masks are not supported)")
    flat = segmentation[0]
    if len(flat) % 2:
        raise v.RecordProblem(v.MALFORMED, "segmentation polygon has an odd number of values")
    pairs = [[flat[i], flat[i + 1]] for i in range(0, len(flat), 2)]
    return v.polygon_points(pairs, width, height, tolerance_px)


def read_region_file(path, *, image_root=None, on_bad: str = "raise", check_images: bool = True,
                     box_tolerance_px: float = 1.0, prompt: str = REGION_INSTRUCTION) -> ReadResult:
    """Read the COCO-like region file: one RegionSample per annotation (prompt: the stage-1
    instruction; answer: the caption; no structured attributes in this format)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise v.BadRecordError(path, "top level", v.MALFORMED,
                               "expected an object with 'images' and 'annotations' lists")
    policy = v.BadRecords(path, on_bad)

    images: dict[str, tuple[str, int, int] | v.RecordProblem] = {}
    for index, image in enumerate(data["images"]):
        try:
            if not isinstance(image, dict) or "id" not in image:
                raise v.RecordProblem(v.MALFORMED, "image entry has no 'id'")
            width, height = v.check_size(image.get("width"), image.get("height"))
            image_path = v.check_image(root, image.get("file_name"), check_images)
            images[str(image["id"])] = (image_path, width, height)
        except v.RecordProblem as p:
            # Remember the problem: every annotation on this image is then bad for this reason.
            key = str(image.get("id", f"#{index}")) if isinstance(image, dict) else f"#{index}"
            images[key] = p

    def region(index: int, ann) -> RegionSample:
        if not isinstance(ann, dict):
            raise v.RecordProblem(v.MALFORMED, "annotation is not an object")
        image_id = ann.get("image_id")
        image = images.get(str(image_id))
        if image is None:
            raise v.RecordProblem(v.UNKNOWN_IMAGE_ID,
                                  f"image_id {image_id!r} is not in 'images'")
        if isinstance(image, v.RecordProblem):
            raise image
        image_path, width, height = image
        box = v.xywh_to_xyxy(ann.get("bbox"), width, height, box_tolerance_px)
        caption = v.check_text(ann.get("caption"), "caption")
        polygon = _coco_polygon(ann.get("segmentation"), width, height, box_tolerance_px)
        return RegionSample(
            image_path=image_path, width=width, height=height, boxes_xyxy=[box], prompt=prompt,
            answer=caption, source_id=f"{image_id}:{ann.get('id', index)}",
            polygons=[polygon] if polygon is not None else None)

    samples = _read_records(policy, data["annotations"], "annotation", region)
    return ReadResult(regions=samples, descriptions=[], report=policy.finish())


def _strip_placeholder(text: str) -> str:
    return text.replace(IMAGE_PLACEHOLDER, "").strip()


def _conversation_turns(conversations) -> list[tuple[str, str]]:
    """(human, gpt) pairs with the image placeholder removed; RecordProblem when malformed/empty."""
    if not isinstance(conversations, list) or not conversations:
        raise v.RecordProblem(v.MALFORMED, "'conversations' is missing or empty")
    turns = []
    pending = None
    for message in conversations:
        if not isinstance(message, dict) or "from" not in message:
            raise v.RecordProblem(v.MALFORMED, "a conversation message has no 'from'")
        if message["from"] == "human":
            pending = _strip_placeholder(v.check_text(message.get("value"), "human prompt"))
        elif message["from"] == "gpt":
            if pending is None:
                raise v.RecordProblem(v.MALFORMED, "a 'gpt' message comes before any 'human' one")
            turns.append((pending, v.check_text(message.get("value"), "gpt answer")))
            pending = None
        else:
            raise v.RecordProblem(v.MALFORMED, f"unknown speaker {message['from']!r}")
    if not turns:
        raise v.RecordProblem(v.EMPTY_TEXT, "the conversation has no 'gpt' answer")
    return turns


def _boxes(raw, width, height, tolerance_px) -> list[Box]:
    if not isinstance(raw, list):
        raise v.RecordProblem(v.MALFORMED, "'bbox' is not a list of [x, y, w, h] boxes")
    return [v.xywh_to_xyxy(b, width, height, tolerance_px) for b in raw]


def read_description_file(path, *, image_root=None, on_bad: str = "raise",
                          check_images: bool = True,
                          box_tolerance_px: float = 1.0) -> ReadResult:
    """Read a description file: one DescriptionSample per entry. One bad box makes the whole entry
    bad (the description talks about every box)."""
    root, data, policy = _list_file(path, image_root, on_bad, "entries")

    def description(index: int, entry) -> DescriptionSample:
        if not isinstance(entry, dict):
            raise v.RecordProblem(v.MALFORMED, "entry is not an object")
        width, height = v.check_size(entry.get("width"), entry.get("height"))
        image_path = v.check_image(root, entry.get("file_name"), check_images)
        boxes = _boxes(entry.get("bbox", []), width, height, box_tolerance_px)
        turns = _conversation_turns(entry.get("conversations"))
        return DescriptionSample(
            image_path=image_path, width=width, height=height, boxes_xyxy=boxes,
            prompt=turns[0][0], answer=turns[0][1], source_id=str(entry.get("image_id")), turns=turns)

    samples = _read_records(policy, data, "entry", description)
    return ReadResult(regions=[], descriptions=samples, report=policy.finish())


@dataclass
class Question:
    """One evaluation question: the image, its region boxes (x1, y1, x2, y2 px) and the prompt."""

    image_id: str
    image_path: str
    width: int
    height: int
    boxes_xyxy: list[Box]
    prompt: str


def _image_size(image_path: str) -> tuple[int, int]:
    """Width and height in pixels from the image header (GDAL reads PNG, JPEG and TIFF)."""
    import rasterio  # only needed when the question file omits sizes

    try:
        with rasterio.open(image_path) as src:
            return src.width, src.height
    except rasterio.errors.RasterioIOError:
        raise v.RecordProblem(v.MISSING_IMAGE, f"image {image_path} cannot be opened") from None


def read_question_file(path, *, image_root=None, on_bad: str = "raise",
                       check_images: bool = True, box_tolerance_px: float = 1.0
                       ) -> tuple[list[Question], v.ReadReport]:
    """Read the evaluation question file. Entries without width/height get them from the image."""
    root, data, policy = _list_file(path, image_root, on_bad, "questions")

    def question(index: int, entry) -> Question:
        image_id = entry.get("image_id") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or image_id is None:
            raise v.RecordProblem(v.MALFORMED, "question is not an object with 'image_id'")
        needs_size = entry.get("width") is None or entry.get("height") is None
        image_path = v.check_image(root, entry.get("file_name"), check_images or needs_size)
        if needs_size:
            width, height = _image_size(image_path)
        else:
            width, height = v.check_size(entry["width"], entry["height"])
        boxes = _boxes(entry.get("bbox", []), width, height, box_tolerance_px)
        prompt = _strip_placeholder(v.check_text(entry.get("text"), "question text"))
        return Question(image_id=str(image_id), image_path=image_path, width=width,
                        height=height, boxes_xyxy=boxes, prompt=prompt)

    return _read_records(policy, data, "question", question), policy.finish()


def read_coco_captions(path) -> dict[str, list[str]]:
    """COCO-caption ground truth ({images, annotations: [{image_id, caption}]}) ->
    {image_id as text: [captions]}. Images listed without a caption raise: they cannot be scored."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise v.BadRecordError(path, "top level", v.MALFORMED,
                               "expected a COCO caption object with an 'annotations' list")
    refs: dict[str, list[str]] = {}
    for index, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise v.BadRecordError(path, f"annotation {index}", v.MALFORMED,
                                   "annotation has no 'image_id'")
        try:
            caption = v.check_text(ann.get("caption"), "caption")
        except v.RecordProblem as p:
            raise v.BadRecordError(path, f"annotation {index} (image_id {ann['image_id']})",
                                   p.reason, p.detail) from None
        refs.setdefault(str(ann["image_id"]), []).append(caption)
    for image in data.get("images", []):
        if isinstance(image, dict) and str(image.get("id")) not in refs:
            raise v.BadRecordError(path, f"image {image.get('id')}", v.EMPTY_TEXT,
                                   "image has no reference caption")
    return refs
