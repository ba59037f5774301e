"""Scenes + AOIs -> batches of region chips -> model -> output records.

Plain functions with progress and cancel hooks, used alike by the CLI, the JSON-lines worker and
the QGIS plugin's worker. Regions are streamed: only one batch of chips is in memory at a time.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import shapely
from rasterio.windows import bounds as window_bounds

from mgimm_core.errors import RegionError
from mgimm_core.output import RegionRecord, RunInfo, TileRecord, open_output, region_key, tile_key
from mgimm_core.prompts import DESCRIPTION_PROMPT
from mgimm_core.regions import AOIFeature, RegionChip, prepare_region, read_region
from mgimm_core.scene import Scene
from mgimm_core.tiles import iter_tiles, tile_grid


@dataclass
class Timings:
    """Seconds spent per stage (read: raster I/O and region placement; model: preprocessing and
    generation; write: done by the caller and added there)."""

    seconds: dict = field(default_factory=lambda: defaultdict(float))

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now

    def as_dict(self) -> dict:
        return {k: round(v, 3) for k, v in self.seconds.items()}


@dataclass
class DescribeSettings:
    batch_size: int = 8
    context: float = 0.25          # margin around a region, fraction of its larger extent
    min_window: int = 48           # smallest window side, scene pixels
    prompt: str | None = None      # description instruction (default: mgimm_core.prompts)
    attributes: bool = True
    description: bool = True


@dataclass
class _Pending:
    scene: Scene
    feature: AOIFeature
    chip: RegionChip


def _region_record(scene_name: str, feature: AOIFeature, *, model: str, prompt: str, chip=None,
                   text=None, error: str | None = None) -> RegionRecord:
    return RegionRecord(
        scene=scene_name, region_id=feature.id, geometry=feature.geometry, crs=feature.crs,
        description=getattr(text, "description", None), attributes=getattr(text, "attributes", {}) or {},
        properties=feature.properties, valid_fraction=getattr(chip, "valid_fraction", None),
        gsd_m=getattr(chip, "gsd_m", None), model=model, prompt=prompt, error=error)


def place_regions(scenes: list[Scene], features: Iterable[AOIFeature], *, chip_size: int,
                  context: float, min_window: int, place: Callable = prepare_region
                  ) -> Iterator[tuple[Scene | None, AOIFeature, RegionChip | RegionError]]:
    """Each AOI on every scene that covers it; an AOI no scene covers yields one error.

    place: prepare_region (default), or a function with its signature that only locates the
    region (mgimm_core.planning.locate_window: no pixel read), so a planner gets the same
    placements and the same per-region errors as the pipeline.

    Raises CRSError for inputs that cannot be combined at all (e.g. a scene without CRS and a
    geographic AOI): that is a whole-input error, not a per-region one.
    """
    for feature in features:
        placed, errors = False, []
        for scene in scenes:
            try:
                chip = place(scene, feature, model_input=chip_size, context=context,
                             min_window=min_window)
            except RegionError as exc:
                errors.append(exc)
                continue
            placed = True
            yield scene, feature, chip
        if not placed:
            if len(scenes) > 1 and errors and all("outside" in str(e) for e in errors):
                error = RegionError(f"region {feature.id!r} lies outside all {len(scenes)} scenes")
            else:
                error = errors[0] if errors else RegionError(f"region {feature.id!r}: no scene given")
            yield (scenes[0] if len(scenes) == 1 else None), feature, error


def describe_regions(scenes: list[Scene], features: Iterable[AOIFeature], describer,
                     settings: DescribeSettings = DescribeSettings(), *, skip: set | None = None,
                     timings: Timings | None = None, should_cancel: Callable[[], bool] = lambda: False
                     ) -> Iterator[list[RegionRecord]]:
    """Yield lists of records, one list per model batch (plus lists of per-region errors).

    skip: resume keys (scene, region_id) already written; those regions are not described again.
    """
    skip = skip or set()
    timings = timings or Timings()
    prompt = settings.prompt or DESCRIPTION_PROMPT
    model = describer.model_id
    pending: list[_Pending] = []

    def flush():
        t = time.perf_counter()
        images, boxes, masks = [], [], []
        for item in pending:
            image, _valid = read_region(item.scene, item.chip)
            images.append(image)
            boxes.append(item.chip.box)
            masks.append(item.chip.mask)
        t = timings.add("read", t)
        texts = describer.describe(images, boxes, masks, attributes=settings.attributes,
                                   description=settings.description, prompt=settings.prompt)
        timings.add("model", t)
        records = [_region_record(p.scene.path, p.feature, model=model, prompt=prompt, chip=p.chip, text=x)
                   for p, x in zip(pending, texts)]
        pending.clear()
        return records

    t = time.perf_counter()
    for scene, feature, placed in place_regions(scenes, features, chip_size=describer.chip_size,
                                                context=settings.context, min_window=settings.min_window):
        t = timings.add("read", t)
        if should_cancel():
            return
        scene_name = scene.path if scene is not None else ""
        if region_key(scene_name, feature.id) in skip:
            continue
        if isinstance(placed, RegionError):
            yield [_region_record(scene_name, feature, model=model, prompt=prompt, error=str(placed))]
        else:
            pending.append(_Pending(scene, feature, placed))
            if len(pending) >= settings.batch_size:
                yield flush()
        t = time.perf_counter()
    if pending and not should_cancel():
        yield flush()


def describe_tiles(scene: Scene, describer, *, tile_size: int = 512, overlap: int = 0,
                   min_valid_fraction: float = 0.5, batch_size: int = 8, prompt: str | None = None,
                   skip: set | None = None, timings: Timings | None = None,
                   should_cancel: Callable[[], bool] = lambda: False) -> Iterator[list[TileRecord]]:
    """Describe every tile of a scene's grid (the whole tile is the region); one list per batch."""
    skip = skip or set()
    timings = timings or Timings()
    grid = tile_grid(scene, size=tile_size, overlap=overlap)
    rows_cols = grid.shape
    used_prompt = prompt or DESCRIPTION_PROMPT
    batch = []

    def flush():
        t = time.perf_counter()
        images = [tile.image for tile in batch]
        boxes = [(0.0, 0.0, float(im.shape[1]), float(im.shape[0])) for im in images]
        texts = describer.describe(images, boxes, [None] * len(images), attributes=False,
                                   description=True, prompt=prompt)
        timings.add("model", t)
        records = []
        for tile, text in zip(batch, texts):
            geometry = shapely.box(*window_bounds(tile.window, scene.transform))
            records.append(TileRecord(
                scene=scene.path, tile_index=tile.index, row=tile.index // rows_cols[1],
                col=tile.index % rows_cols[1], geometry=geometry, crs=scene.crs.to_wkt() if scene.crs else None,
                description=text.description, valid_fraction=tile.valid_fraction,
                gsd_m=scene.gsd_m() * tile.window.width / tile.image.shape[1] if scene.crs else None,
                model=describer.model_id, prompt=used_prompt))
        batch.clear()
        return records

    t = time.perf_counter()
    for tile in iter_tiles(scene, grid, min_valid_fraction=min_valid_fraction, out_size=describer.chip_size):
        t = timings.add("read", t)
        if should_cancel():
            return
        if tile_key(scene.path, tile.index) not in skip:
            batch.append(tile)
            if len(batch) >= batch_size:
                yield flush()
        t = time.perf_counter()
    if batch and not should_cancel():
        yield flush()


def preflight(scenes: list[Scene], features: list[AOIFeature]) -> None:
    """Raise now what would fail every region (a scene without CRS and a lon/lat AOI, say), so a
    run that cannot work stops before its output file exists."""
    for scene in scenes:
        for feature in features[:1]:
            try:
                prepare_region(scene, feature)
            except RegionError:
                pass  # per-region problems are recorded per region later


def describe_to_output(scenes: list[Scene], features: list[AOIFeature], describer, output: str, mode: str,
                       run: RunInfo, *, tiles: bool = False, tile_size: int = 512, tile_overlap: int = 0,
                       min_valid: float = 0.5, batch_size: int = 8, prompt: str | None = None,
                       attributes: bool = True, on_batch: Callable[[int], None] = lambda done: None,
                       should_cancel: Callable[[], bool] = lambda: False) -> dict:
    """Describe AOI regions (or every tile) of opened scenes into `output`, committing per batch.

    The body of the CLI's `describe`, without click: `on_batch(records_done)` after each committed
    batch (a progress bar), `should_cancel()` checked between batches. Returns the JSON summary;
    "cancelled": true when should_cancel stopped it (what was written is kept).
    """
    preflight(scenes, features)
    timings = Timings()
    counts = {"described": 0, "failed": 0}
    settings = DescribeSettings(batch_size=batch_size, prompt=prompt, attributes=attributes)
    with open_output(output, mode=mode, run=run) as out:
        if tiles:
            done = out.completed_tile_keys() if mode == "resume" else set()
            batches = (batch for scene in scenes for batch in describe_tiles(
                scene, describer, tile_size=tile_size, overlap=tile_overlap, min_valid_fraction=min_valid,
                batch_size=batch_size, prompt=prompt, skip=done, timings=timings, should_cancel=should_cancel))
            write = out.write_tiles
        else:
            done = out.completed_region_keys() if mode == "resume" else set()
            batches = describe_regions(scenes, features, describer, settings, skip=done, timings=timings,
                                       should_cancel=should_cancel)
            write = out.write_regions
        for records in batches:
            t = time.perf_counter()
            write(records)
            timings.add("write", t)
            for r in records:
                counts["failed" if r.error else "described"] += 1
            on_batch(counts["described"] + counts["failed"])
    total = counts["described"] + counts["failed"]
    model_s = timings.seconds.get("model", 0.0)
    return {"output": str(output), "mode": mode, "model": describer.model_id, "device": str(describer.device),
            "scenes": [s.path for s in scenes], "unit": "tiles" if tiles else "regions",
            "described": counts["described"], "failed": counts["failed"], "already_done": len(done),
            "cancelled": bool(should_cancel()), "timings_s": timings.as_dict(),
            "per_second": round(total / model_s, 3) if model_s else None}
