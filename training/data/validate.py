"""Checks shared by every dataset reader, and what to do with a record that fails one.

A reader meets bad records in real data (a missing image, a box drawn past the image edge, an empty
caption). `BadRecords` decides, by one option, whether such a record stops the read with an error
that names the file, the record and the fix (`on_bad="raise"`), or is skipped and counted per reason
(`on_bad="skip"`); the counts come back in a `ReadReport` and are logged.

All boxes here are in pixels of the full image, (x, y) from the top-left corner.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mgimm_core.errors import MGIMMError

log = logging.getLogger(__name__)

# Reasons a record is rejected, each with the fix told to the user.
MISSING_IMAGE = "missing_image"
BOX_OUTSIDE_IMAGE = "box_outside_image"
DEGENERATE_BOX = "degenerate_box"
EMPTY_TEXT = "empty_text"
UNKNOWN_IMAGE_ID = "unknown_image_id"
MALFORMED = "malformed_record"

FIXES = {
    MISSING_IMAGE: "put the image there, pass the right image_root, or use on_bad='skip'",
    BOX_OUTSIDE_IMAGE: "fix the box or the image size in the annotation, or use on_bad='skip'",
    DEGENERATE_BOX: "give the box a positive width and height, or use on_bad='skip'",
    EMPTY_TEXT: "write the caption/answer text, or use on_bad='skip'",
    UNKNOWN_IMAGE_ID: "add the image to 'images' or fix the annotation's image_id, "
                      "or use on_bad='skip'",
    MALFORMED: "give the record every required field with the right type, or use on_bad='skip'",
}

ON_BAD_CHOICES = ("raise", "skip")


class BadRecordError(MGIMMError, ValueError):
    """A dataset record cannot be used; the message names the file, the record and the fix.

    Attributes: `path` (the annotation file), `record` (index or image_id, as text), `reason`
    (one of the reason constants of this module).
    """

    def __init__(self, path, record: str, reason: str, detail: str):
        self.path = str(path)
        self.record = record
        self.reason = reason
        super().__init__(f"{self.path}: {record}: {detail} ({reason}); fix: {FIXES[reason]}")


@dataclass
class ReadReport:
    """What a reader kept and skipped. `skipped` counts skipped records per reason."""

    path: str
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)  # reason -> first message seen, for the log

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict:
        return {"path": self.path, "kept": self.kept, "skipped": dict(self.skipped),
                "total_skipped": self.total_skipped}


class BadRecords:
    """The bad-record policy of one read: raise at once, or skip and count into `report`."""

    def __init__(self, path, on_bad: str = "raise"):
        if on_bad not in ON_BAD_CHOICES:
            raise ValueError(f"on_bad must be one of {ON_BAD_CHOICES}, got {on_bad!r}")
        self.path = str(path)
        self.on_bad = on_bad
        self.report = ReadReport(path=self.path)

    def bad(self, record: str, reason: str, detail: str) -> None:
        """Handle one bad record: raise `BadRecordError`, or count it (the caller then skips it)."""
        error = BadRecordError(self.path, record, reason, detail)
        if self.on_bad == "raise":
            raise error
        self.report.skipped[reason] += 1
        self.report.examples.setdefault(reason, str(error))

    def kept(self, n: int = 1) -> None:
        self.report.kept += n

    def finish(self) -> ReadReport:
        """Log the skip counts (a warning per reason, with the first example); return the report."""
        for reason, count in sorted(self.report.skipped.items()):
            log.warning("%s: skipped %d record(s): %s; first: %s", self.path, count, reason,
                        self.report.examples[reason])
        log.info("%s: kept %d record(s), skipped %d", self.path, self.report.kept,
                 self.report.total_skipped)
        return self.report


class RecordProblem(Exception):
    """Raised by the check helpers below; readers turn it into `BadRecords.bad(...)`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def xywh_to_xyxy(box, width: float, height: float, tolerance_px: float = 1.0
                 ) -> tuple[float, float, float, float]:
    """[x, y, w, h] pixels -> (x1, y1, x2, y2) pixels, checked against a width x height image.

    A box may overhang the image by up to `tolerance_px` (annotation rounding) and is then clipped;
    further out, or with no area, it raises `RecordProblem`.
    """
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        raise RecordProblem(MALFORMED, f"bbox {box!r} is not four numbers [x, y, w, h]") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise RecordProblem(DEGENERATE_BOX, f"bbox {box!r} has a non-finite value")
    if w <= 0 or h <= 0:
        raise RecordProblem(DEGENERATE_BOX, f"bbox {box!r} has no area (w={w:g}, h={h:g} px)")
    x1, y1, x2, y2 = x, y, x + w, y + h
    if x1 < -tolerance_px or y1 < -tolerance_px or x2 > width + tolerance_px \
            or y2 > height + tolerance_px:
        raise RecordProblem(BOX_OUTSIDE_IMAGE,
                            f"bbox {box!r} (x1,y1,x2,y2 = {x1:g},{y1:g},{x2:g},{y2:g} px) is not "
                            f"inside the {width:g} x {height:g} px image")
    x1, y1 = max(x1, 0.0), max(y1, 0.0)
    x2, y2 = min(x2, float(width)), min(y2, float(height))
    if x2 <= x1 or y2 <= y1:
        raise RecordProblem(DEGENERATE_BOX, f"bbox {box!r} has no area inside the image")
    return (x1, y1, x2, y2)


def check_size(width, height) -> tuple[int, int]:
    """Image width and height in pixels, as positive ints, or `RecordProblem`."""
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError):
        raise RecordProblem(MALFORMED, f"image size {width!r} x {height!r} is not two integers") \
            from None
    if w <= 0 or h <= 0:
        raise RecordProblem(MALFORMED, f"image size {w} x {h} px is not positive")
    return w, h


def check_text(text, what: str = "caption") -> str:
    """Stripped non-empty text, or `RecordProblem`."""
    if not isinstance(text, str):
        if text is None:
            raise RecordProblem(EMPTY_TEXT, f"{what} is missing")
        raise RecordProblem(MALFORMED, f"{what} is {type(text).__name__}, not text")
    stripped = text.strip()
    if not stripped:
        raise RecordProblem(EMPTY_TEXT, f"{what} is empty")
    return stripped


def check_image(image_root: Path, file_name, check_exists: bool) -> str:
    """The image path (image_root / file_name) as text; checks the file exists when asked."""
    if not isinstance(file_name, str) or not file_name:
        raise RecordProblem(MALFORMED, f"file_name {file_name!r} is not a file name")
    path = Path(image_root) / file_name
    if check_exists and not path.is_file():
        raise RecordProblem(MISSING_IMAGE, f"image {path} does not exist")
    return str(path)


def polygon_points(polygon, width: float, height: float, tolerance_px: float = 1.0
                   ) -> tuple[tuple[float, float], ...]:
    """[[x, y], ...] pixels -> tuple of (x, y) inside a width x height image (at least 3 points).

    Points may overhang by `tolerance_px` and are then clipped; otherwise `RecordProblem`.
    """
    try:
        points = tuple((float(p[0]), float(p[1])) for p in polygon)
    except (TypeError, ValueError, IndexError):
        raise RecordProblem(MALFORMED, "polygon is not a list of [x, y] pixel points") from None
    if len(points) < 3:
        raise RecordProblem(DEGENERATE_BOX, f"polygon has {len(points)} point(s), needs at least 3")
    for x, y in points:
        if not (math.isfinite(x) and math.isfinite(y)):
            raise RecordProblem(DEGENERATE_BOX, f"polygon point ({x}, {y}) is not finite")
        if x < -tolerance_px or y < -tolerance_px or x > width + tolerance_px \
                or y > height + tolerance_px:
            raise RecordProblem(BOX_OUTSIDE_IMAGE, f"polygon point ({x:g}, {y:g}) px is outside "
                                                   f"the {width:g} x {height:g} px image")
    return tuple((min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height)))
                 for x, y in points)
