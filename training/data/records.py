"""The samples every reader yields, and the project's own JSONL dataset format.

Samples are plain dataclasses (no torch) so readers stay cheap and testable; the training code turns
them into tensors. Boxes in samples are (x1, y1, x2, y2) in pixels of the full image; polygons are
((x, y), ...) in the same pixels.

The project format is JSON Lines, one record per image chip (the synthetic world writes it)::

    {"image": "chips/000001.tif", "width": 256, "height": 256,
     "regions": [{"bbox": [x, y, w, h], "caption": "red rectangular building",
                  "polygon": [[x, y], ...],            # optional, pixels
                  "attributes": {"name": "building", "colour": "red", ...}}],   # optional
     "description": "A detailed paragraph ..."}         # optional

`image` is relative to the JSONL file's folder unless an `image_root` is given; `bbox` is
[x, y, w, h] in pixels like the reference region file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from training.data import validate as v

# The stage-1 instruction of the reference code, used when a source carries no prompt of its own.
REGION_INSTRUCTION = ("Based on the provided region of the remote sensing image, describe the "
                      "basic attributes of the main objects in that region.")
# Used for project-format descriptions, which store no prompt.
DESCRIPTION_INSTRUCTION = "Describe this remote sensing image in detail."

Box = tuple[float, float, float, float]
Polygon = tuple[tuple[float, float], ...]


@dataclass
class RegionSample:
    """One region question: boxes (usually one) on an image, the prompt and the expected answer.

    `attributes` holds ground-truth attributes (name, colour, shape, size, ...) where the source has
    them (the project format), else None. `polygons` is None or one entry per box (None where that
    region has no polygon).
    """

    image_path: str
    width: int
    height: int
    boxes_xyxy: list[Box]
    prompt: str
    answer: str
    source_id: str
    attributes: dict | None = None
    polygons: list[Polygon | None] | None = None


@dataclass
class DescriptionSample:
    """One detailed-description example: the image, all its region boxes, the prompt and answer.

    `turns` keeps every (human, gpt) pair of a multi-turn conversation; `prompt`/`answer` are the
    first pair, with the `<image>` placeholder removed from the prompt.
    """

    image_path: str
    width: int
    height: int
    boxes_xyxy: list[Box]
    prompt: str
    answer: str
    source_id: str
    polygons: list[Polygon | None] | None = None
    turns: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class ReadResult:
    """What a reader returns: the samples it kept and the report of what it skipped."""

    regions: list[RegionSample]
    descriptions: list[DescriptionSample]
    report: v.ReadReport


# --- the project's own format ------------------------------------------------------------------

@dataclass
class RegionRecord:
    """One region of a chip record: bbox [x, y, w, h] pixels, its caption, optional extras."""

    bbox: list[float]
    caption: str
    polygon: list[list[float]] | None = None
    attributes: dict | None = None

    def to_json(self) -> dict:
        out = {"bbox": [float(c) for c in self.bbox], "caption": self.caption}
        if self.polygon is not None:
            out["polygon"] = [[float(x), float(y)] for x, y in self.polygon]
        if self.attributes is not None:
            out["attributes"] = dict(self.attributes)
        return out


@dataclass
class ChipRecord:
    """One line of a project JSONL file: an image chip with its regions and description."""

    image: str
    width: int
    height: int
    regions: list[RegionRecord] = field(default_factory=list)
    description: str | None = None

    def to_json(self) -> dict:
        out = {"image": self.image, "width": int(self.width), "height": int(self.height),
               "regions": [r.to_json() for r in self.regions]}
        if self.description is not None:
            out["description"] = self.description
        return out


def write_chip_records(path, records) -> int:
    """Write ChipRecords (or dicts in the same shape) as JSON Lines; returns the count written."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            data = record.to_json() if isinstance(record, ChipRecord) else record
            f.write(json.dumps(data, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_chip_records(path, *, image_root=None, on_bad: str = "raise", check_images: bool = True,
                      box_tolerance_px: float = 1.0,
                      description_prompt: str = DESCRIPTION_INSTRUCTION,
                      region_prompt: str = REGION_INSTRUCTION) -> ReadResult:
    """Read a project JSONL file into region samples (one per region) and description samples.

    A bad chip (unparsable line, missing image, bad size) is skipped whole; a bad region only
    drops that region (the description keeps the other boxes); an empty description drops only the
    description sample. `on_bad="raise"` stops at the first problem instead (see `validate`).
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    policy = v.BadRecords(path, on_bad)
    regions: list[RegionSample] = []
    descriptions: list[DescriptionSample] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"line {line_no}"
            try:
                chip = json.loads(line)
                if not isinstance(chip, dict):
                    raise v.RecordProblem(v.MALFORMED, "line is not a JSON object")
                width, height = v.check_size(chip.get("width"), chip.get("height"))
                image_path = v.check_image(root, chip.get("image"), check_images)
                raw_regions = chip.get("regions", [])
                if not isinstance(raw_regions, list):
                    raise v.RecordProblem(v.MALFORMED, "'regions' is not a list")
            except json.JSONDecodeError as exc:
                policy.bad(where, v.MALFORMED, f"not valid JSON ({exc.msg})")
                continue
            except v.RecordProblem as p:
                policy.bad(where, p.reason, p.detail)
                continue
            chip_boxes: list[Box] = []
            chip_polygons: list[Polygon | None] = []
            for r_index, region in enumerate(raw_regions):
                r_where = f"{where} region {r_index}"
                try:
                    if not isinstance(region, dict):
                        raise v.RecordProblem(v.MALFORMED, "region is not a JSON object")
                    box = v.xywh_to_xyxy(region.get("bbox"), width, height, box_tolerance_px)
                    caption = v.check_text(region.get("caption"), "caption")
                    polygon = None
                    if region.get("polygon") is not None:
                        polygon = v.polygon_points(region["polygon"], width, height,
                                                   box_tolerance_px)
                    attributes = region.get("attributes")
                    if attributes is not None and not isinstance(attributes, dict):
                        raise v.RecordProblem(v.MALFORMED, "'attributes' is not an object")
                except v.RecordProblem as p:
                    policy.bad(r_where, p.reason, p.detail)
                    continue
                regions.append(RegionSample(
                    image_path=image_path, width=width, height=height, boxes_xyxy=[box],
                    prompt=region_prompt, answer=caption, source_id=f"{path.name}:{r_where}",
                    attributes=dict(attributes) if attributes is not None else None,
                    polygons=[polygon] if polygon is not None else None))
                policy.kept()
                chip_boxes.append(box)
                chip_polygons.append(polygon)
            if "description" in chip:
                try:
                    text = v.check_text(chip["description"], "description")
                except v.RecordProblem as p:
                    policy.bad(f"{where} description", p.reason, p.detail)
                    continue
                has_polygons = any(p is not None for p in chip_polygons)
                descriptions.append(DescriptionSample(
                    image_path=image_path, width=width, height=height, boxes_xyxy=chip_boxes,
                    prompt=description_prompt, answer=text, source_id=f"{path.name}:{where}",
                    polygons=chip_polygons if has_polygons else None,
                    turns=[(description_prompt, text)]))
                policy.kept()
    return ReadResult(regions=regions, descriptions=descriptions, report=policy.finish())
