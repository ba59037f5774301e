"""The one describe path: scenes + AOIs (or tiles) -> placements -> one read each -> model -> outcomes.

1. Work: `region_work` / `tile_work` place every region or tile on its scene (pure placement, no
   pixel read) and yield `WorkItem`s; a region no scene covers is an item carrying its error.
2. `describe_work` is the one loop that every caller runs (the CLI, the worker, the server and each
   engine's workers): it reads each placed item once, batches them, asks the model and yields
   lists of `Outcome`s (one list per model batch or per failed region).
3. `describe_to_output` is the files job's body: an engine's outcomes committed batch by batch to
   an output layer, with the JSON summary.

Regions are streamed: only a few batches of chips are in memory at a time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol

import numpy as np
import shapely
from rasterio.windows import Window
from shapely import affinity
from rasterio.windows import bounds as window_bounds

from mgimm_core.errors import (MGIMMError, OptionsError, RegionError, RegionNoDataError, RegionOutsideError,
                               error_code)
from mgimm_core.guides import DEFAULT_MAX_GUIDES, GuideIndex, GuideRegion, guides_on_chip
from mgimm_core.output import (ObjectRecord, RegionRecord, RunInfo, TileRecord, earlier_tile_grids, open_output,
                               region_key, tile_key)
from mgimm_core.prompts import ATTRIBUTE_PROMPT
from mgimm_core.regions import AOIFeature, ChipSettings, RegionChip, RegionPlacement, place_region, read_region
from mgimm_core.scene import Scene
from mgimm_core.tiles import tile_grid

if TYPE_CHECKING:
    from mgimm_core.answers import RegionText
    from mgimm_core.endpoint.served import EndpointModel
    from mgimm_core.engines import Engine
    from mgimm_core.families.regions import BoxLike, BoxMask
    from mgimm_core.model_dir import ModelDirectory
    from mgimm_core.output.schema import ResumeKey

log = logging.getLogger(__name__)

#: Batches gathered before they are cut, so each batch holds regions of similar expected answer
#: length (a batch decodes until its longest answer ends).
LOOKAHEAD_BATCHES = 4


# ================================================================================ options
@dataclass(frozen=True)
class TileOptions:
    """Tiles mode: the grid (scene pixels) and the share of valid pixels a tile needs."""

    size: int = 512
    overlap: int = 0
    min_valid: float = 0.5

    def __post_init__(self) -> None:
        if self.size < 16:
            raise OptionsError(f"tile size {self.size}: give at least 16 pixels.", "tile_size")
        if not 0 <= self.overlap < self.size:
            raise OptionsError(f"tile overlap {self.overlap} must be at least 0 and smaller than the tile "
                               f"size {self.size} (tiles step by size - overlap pixels).", "tile_overlap")
        if not 0 <= self.min_valid <= 1:
            raise OptionsError(f"minimum valid share {self.min_valid}: give a fraction within 0..1.", "min_valid")


@dataclass(frozen=True)
class DescribeOptions:
    """What to ask about each region, built once by the CLI, the service or the Python API."""

    batch_size: int | None = None      # regions per model batch; None: the model's (ModelDirectory)
    prompt: str | None = None          # description instruction (default: mgimm_core.prompts)
    attributes: bool = True            # ask the attribute question too (regions only)
    description: bool = True
    tiles: TileOptions | None = None   # None: AOI regions; else every tile of each scene's grid
    max_guides: int = DEFAULT_MAX_GUIDES   # guided runs: guide objects per sequence, largest first
    strict: bool = False               # refuse a prompt with words the model does not know

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise OptionsError(f"batch size {self.batch_size}: give at least 1.", "batch_size")
        if self.max_guides < 1:
            raise OptionsError(f"guide objects per region {self.max_guides}: give at least 1.", "max_guides")

    def for_model(self, model: ModelDirectory | EndpointModel) -> "DescribeOptions":
        """These options with the model's defaults filled in (a `ModelDirectory`)."""
        if self.batch_size is not None:
            return self
        return dataclasses.replace(self, batch_size=model.default_batch_size)

    @property
    def unit(self) -> str:
        return "tiles" if self.tiles is not None else "regions"

    def parameters(self) -> dict[str, Any]:
        """Plain values for the `runs` table."""
        values = asdict(self)
        values["tiles"] = values["tiles"] is not None
        if self.tiles is not None:
            values.update(tile_size=self.tiles.size, tile_overlap=self.tiles.overlap,
                          min_valid=self.tiles.min_valid)
        return values


# ================================================================================ timings
@dataclass
class Timings:
    """Seconds per stage (place: region placement; read: pixel I/O; load: loading the model, once;
    model: preprocessing and generation; write: added by the caller) and counts (reads, regions)."""

    seconds: dict[str, Any] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, Any] = field(default_factory=lambda: defaultdict(int))

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now

    def merge(self, other: dict[str, Any]) -> None:
        for stage, value in other.get("seconds", {}).items():
            self.seconds[stage] += value
        for name, value in other.get("counts", {}).items():
            self.counts[name] += value

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) for k, v in self.seconds.items()}


# ================================================================================ work
@dataclass(frozen=True)
class TileRef:
    """One tile of a scene's grid."""

    index: int
    row: int
    col: int


@dataclass
class WorkItem:
    """A region (or tile) on one scene, placed; or the error that keeps it from being described."""

    scene: Scene | None
    subject: AOIFeature | TileRef
    placement: RegionPlacement | None = None
    error: MGIMMError | None = None
    guides: list[GuideRegion] | None = None     # guided runs: the guide objects on its chip
    guides_left: int = 0                        # guide objects inside beyond options.max_guides

    @property
    def scene_name(self) -> str:
        return self.scene.path if self.scene is not None else ""

    @property
    def key(self) -> ResumeKey:
        if isinstance(self.subject, TileRef):
            return tile_key(self.scene_name, self.subject.index)
        return region_key(self.scene_name, self.subject.id)


def region_work(scenes: list[Scene], features: Iterable[AOIFeature], chip: ChipSettings
                ) -> Iterator[WorkItem]:
    """Each AOI on every scene that covers it; an AOI no scene covers is one item with its error.

    Raises CRSError for inputs that cannot be combined at all (e.g. a scene without CRS and a
    geographic AOI): that is a whole-input error, not a per-region one.
    """
    for feature in features:
        placed, errors = False, []
        for scene in scenes:
            try:
                placement = place_region(scene, feature, chip)
            except RegionError as exc:
                errors.append(exc)
                continue
            placed = True
            yield WorkItem(scene, feature, placement)
        if placed:
            continue
        error: RegionError
        if len(scenes) > 1 and errors and all(isinstance(e, RegionOutsideError) for e in errors):
            error = RegionOutsideError(f"region {feature.id!r} lies outside all {len(scenes)} scenes")
        else:
            error = errors[0] if errors else RegionError(f"region {feature.id!r}: no scene given")
        yield WorkItem(scenes[0] if len(scenes) == 1 else None, feature, error=error)


def tile_placement(scene: Scene, window: Window, input_size: int) -> RegionPlacement:
    """A tile as a region: the whole chip is the region (box = chip, no mask), read at the model's
    input size on its longer side. A tile larger than the scene is clipped to it (a small scene is
    one tile of real pixels, not a mostly-empty one that falls under the valid minimum)."""
    window = window.intersection(Window(0, 0, scene.width, scene.height))
    h, w = int(window.height), int(window.width)
    scale = max(h, w) / input_size                     # scene pixels per chip pixel
    out_shape = (max(1, round(h / scale)), max(1, round(w / scale)))
    gsd = scene.gsd_m() * scale if scene.crs is not None else math.nan
    return RegionPlacement(id="", window=window, out_shape=out_shape, mask=np.ones(out_shape, dtype=bool),
                           box=(0.0, 0.0, float(out_shape[1]), float(out_shape[0])), inside_share=1.0,
                           gsd_m=gsd, geometry=shapely.box(*window_bounds(window, scene.transform)),
                           use_mask=False)


def tile_work(scenes: list[Scene], tiles: TileOptions, chip: ChipSettings) -> Iterator[WorkItem]:
    """Every tile of each scene's grid, in grid order (row-major: block order on disk)."""
    for scene in scenes:
        grid = tile_grid(scene, size=tiles.size, overlap=tiles.overlap)
        cols = grid.shape[1]
        for index, window in enumerate(grid):
            yield WorkItem(scene, TileRef(index, index // cols, index % cols),
                           tile_placement(scene, window, chip.input_size))


def work_items(scenes: list[Scene], features: Iterable[AOIFeature], options: DescribeOptions,
               chip: ChipSettings) -> Iterator[WorkItem]:
    """The work of a run: tiles when options.tiles, else the AOI regions."""
    if options.tiles is not None:
        return tile_work(scenes, options.tiles, chip)
    return region_work(scenes, features, chip)


def attach_guides(work: Iterable[WorkItem], guide_features: list[AOIFeature], max_guides: int
                  ) -> Iterator[WorkItem]:
    """The work with each placed item's guide objects (guides whose centre lies in its region),
    the guide layer indexed once per scene."""
    indexes: dict[int, GuideIndex] = {}
    for item in work:
        if item.placement is not None and item.scene is not None:
            scene = item.scene
            if id(scene) not in indexes:
                indexes[id(scene)] = GuideIndex.build(scene, guide_features)
            inv = ~scene.transform
            region_pixels = affinity.affine_transform(item.placement.geometry,
                                                      [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])
            item.guides, item.guides_left = guides_on_chip(indexes[id(scene)], item.placement, region_pixels,
                                                           max_guides)
        yield item


def preflight(scenes: list[Scene], features: list[AOIFeature], chip: ChipSettings) -> None:
    """Raise now what would fail every region (a scene without CRS and a lon/lat AOI, say), so a
    run that cannot work stops before its output file exists. Places one region; reads nothing."""
    for scene in scenes:
        for feature in features[:1]:
            try:
                place_region(scene, feature, chip)
            except RegionError:
                pass  # per-region problems are recorded per region later


# ================================================================================ outcomes
@dataclass
class Outcome:
    """One row's record, with what an interactive client also shows."""

    record: RegionRecord | TileRecord
    attribute_text: str | None = None
    chip: RegionChip | None = None        # the pixels the model saw (None for a failed region)
    objects: list[ObjectRecord] = field(default_factory=list)   # guided runs: its guide objects


def object_records(item: WorkItem, texts: Iterable[RegionText], *, model: str) -> list[ObjectRecord]:
    """The guide objects of a described item as rows of the objects layer, linked to its row."""
    parent_layer, parent_id = (("tiles", str(item.subject.index)) if isinstance(item.subject, TileRef)
                               else ("regions", str(item.subject.id)))
    return [ObjectRecord(scene=item.scene_name, region_id=guide.id, geometry=guide.geometry, crs=guide.crs,
                         attributes=text.attributes, properties=guide.properties, model=model,
                         prompt=ATTRIBUTE_PROMPT, parent_layer=parent_layer, parent_id=parent_id,
                         attribute_text=text.attribute_text, guide_status=getattr(text, "guide_status", None),
                         guide_no_object_p=getattr(text, "guide_no_object_p", None),
                         object_p=getattr(text, "object_p", None))
            for guide, text in zip(item.guides or [], texts)]


def build_record(item: WorkItem, *, model: str, prompt: str, chip: RegionChip | None = None,
                 text: RegionText | None = None, error: BaseException | None = None) -> RegionRecord | TileRecord:
    """The one row builder: a work item and what the model said (or its error) -> its record."""
    description = getattr(text, "description", None)
    guide_objects, guide_objects_left = ((len(item.guides), item.guides_left) if item.guides is not None
                                         else (None, None))
    valid_fraction = chip.valid_fraction if chip is not None else None
    gsd = item.placement.gsd_m if item.placement is not None and chip is not None else None
    error = error if error is not None else getattr(text, "error", None)
    message, code = (str(error), error_code(error)) if error is not None else (None, None)
    if isinstance(item.subject, TileRef):
        scene = item.scene
        return TileRecord(scene=item.scene_name, tile_index=item.subject.index, row=item.subject.row,
                          col=item.subject.col, geometry=item.placement.geometry if item.placement else None,
                          crs=scene.crs.to_wkt() if scene is not None and scene.crs else None,
                          description=description, valid_fraction=valid_fraction, gsd_m=gsd, model=model,
                          prompt=prompt, error=message, error_code=code, guide_objects=guide_objects,
                          guide_objects_left=guide_objects_left)
    feature = item.subject
    # A row keeps its AOI geometry, unless the regions layer cannot hold it (a point or line, NaN
    # coordinates): then the row has no geometry and says why in `error` (mgimm_core/output/writer.py).
    geometry = feature.geometry if polygonal_and_finite(feature.geometry) else None
    return RegionRecord(scene=item.scene_name, region_id=feature.id, geometry=geometry, crs=feature.crs,
                        description=description, attributes=getattr(text, "attributes", {}) or {},
                        properties=feature.properties, valid_fraction=valid_fraction, gsd_m=gsd, model=model,
                        prompt=prompt, error=message, error_code=code, guide_objects=guide_objects,
                        guide_objects_left=guide_objects_left, no_object_p=getattr(text, "no_object_p", None),
                        object_p=getattr(text, "object_p", None))


def polygonal_and_finite(geom: shapely.Geometry | None) -> bool:
    """True for a (multi)polygon with finite coordinates: a geometry the regions layer holds."""
    return (geom is not None and geom.geom_type in ("Polygon", "MultiPolygon")
            and bool(np.isfinite(shapely.get_coordinates(geom)).all()))


class RegionModel(Protocol):
    """What the loop needs of a model: its id, its directory and a batched answer for region chips."""

    @property
    def model_id(self) -> str: ...

    @property
    def model(self) -> "ModelDirectory | EndpointModel": ...

    def prepare(self) -> None:
        """Load what `describe` needs (timed apart from the model's work)."""

    def describe(self, images: Sequence[np.ndarray], boxes: Sequence[BoxLike], masks: Sequence[np.ndarray | None],
                 *, attributes: bool, description: bool, prompt: str | None,
                 guides: Sequence[Sequence[BoxMask]] | None = None, guides_left: Sequence[int] | None = None,
                 strict: bool = False, gsds: Sequence[float | None] | None = None) -> list[RegionText]: ...


def expected_length(chip: RegionChip) -> float:
    """Sort key for batching: larger windows hold more objects and get longer descriptions."""
    return float(chip.placement.window.width)


def describe_work(work: Iterable[WorkItem], model: RegionModel, options: DescribeOptions, *,
                  skip: AbstractSet[ResumeKey] = frozenset(), timings: Timings | None = None,
                  should_cancel: Callable[[], bool] = lambda: False) -> Iterator[list[Outcome]]:
    """The describe loop: read each item once, describe in batches, yield outcomes per batch.

    skip: resume keys already written; those items are neither read nor described again.
    Tiles with less than options.tiles.min_valid valid pixels are read but not described (no row).
    """
    timings = timings if timings is not None else Timings()
    options = options.for_model(model.model)
    batch_size = options.batch_size
    assert batch_size is not None             # for_model filled it in
    prompt = model.model.family.recorded_prompt(options.prompt)
    attributes = options.attributes and options.tiles is None
    pending: list[tuple[WorkItem, RegionChip]] = []

    def flush(batch: list[tuple[WorkItem, RegionChip]]) -> list[Outcome]:
        t = time.perf_counter()
        model.prepare()
        t = timings.add("load", t)
        guided = any(item.guides is not None for item, _ in batch)
        texts = model.describe([c.image for _, c in batch], [c.box for _, c in batch],
                               [c.mask if c.placement.use_mask else None for _, c in batch],
                               attributes=attributes, description=options.description, prompt=options.prompt,
                               guides=[[(g.box, g.mask) for g in item.guides or []] for item, _ in batch]
                               if guided else None,
                               guides_left=[item.guides_left for item, _ in batch] if guided else None,
                               strict=options.strict, gsds=[chip.gsd_m for _, chip in batch])
        timings.add("model", t)
        timings.counts["described"] += len(batch)
        return [Outcome(build_record(item, model=model.model_id, prompt=prompt, chip=chip, text=text),
                        getattr(text, "attribute_text", None), chip,
                        object_records(item, getattr(text, "objects", []), model=model.model_id))
                for (item, chip), text in zip(batch, texts)]

    def flush_all() -> Iterator[list[Outcome]]:
        pending.sort(key=lambda pair: expected_length(pair[1]))
        while pending:
            batch = pending[:batch_size]
            del pending[:batch_size]
            yield flush(batch)
            if should_cancel():
                pending.clear()

    t = time.perf_counter()
    for item in work:
        t = timings.add("place", t)
        if should_cancel():
            return
        if item.key in skip:
            continue
        if item.error is not None:
            yield [Outcome(build_record(item, model=model.model_id, prompt=prompt, error=item.error))]
            t = time.perf_counter()
            continue
        assert item.scene is not None and item.placement is not None     # placed items carry both
        chip = read_region(item.scene, item.placement)
        t = timings.add("read", t)
        timings.counts["reads"] += 1
        if options.tiles is None and chip.valid_fraction == 0 and isinstance(item.subject, AOIFeature):
            error = RegionNoDataError(f"region {item.subject.id!r}: no valid pixel on {item.scene_name} (every "
                                      f"pixel under it is nodata or masked), so there is nothing to describe. "
                                      f"Check --nodata and the scene's mask, or use a scene with data there.")
            yield [Outcome(build_record(item, model=model.model_id, prompt=prompt, chip=chip, error=error))]
            t = time.perf_counter()
            continue
        if options.tiles is not None and (chip.valid_fraction < options.tiles.min_valid
                                          or chip.valid_fraction == 0):
            continue
        pending.append((item, chip))
        if len(pending) >= batch_size * LOOKAHEAD_BATCHES:
            yield from flush_all()
            if should_cancel():
                return
        t = time.perf_counter()
    if not should_cancel():
        yield from flush_all()


# ================================================================================ files job body
def expected_rows(scenes: list[Scene], features: list[AOIFeature], options: DescribeOptions, done: int
                  ) -> int | None:
    """Rows a run is expected to write, for progress bars: the regions of one scene, or every tile of
    the scenes' grids (an upper bound: tiles under the valid minimum write no row); None when unknown
    (regions over several scenes, each written where it lies)."""
    if options.tiles is not None:
        return max(0, sum(tile_counts(scenes, options.tiles)) - done)
    return max(0, len(features) - done) if len(scenes) == 1 else None


def tile_counts(scenes: list[Scene], tiles: TileOptions) -> list[int]:
    """The number of tiles in each scene's grid."""
    return [len(tile_grid(s, size=tiles.size, overlap=tiles.overlap)) for s in scenes]


def row_order(scenes: list[Scene], features: list[AOIFeature], options: DescribeOptions
              ) -> Callable[[ResumeKey], int | None]:
    """Each row's place in the run (the writer's `follow_order`): regions in AOI order, a region's
    scenes in the order given; tiles scene by scene in grid order. None for a key the run has not.
    Scenes are told apart by path (a request's chips all carry the raster's name: one scene)."""
    unique = list({s.path: s for s in scenes}.values())
    scene_index = {s.path: j for j, s in enumerate(unique)}
    if options.tiles is not None:
        counts = tile_counts(unique, options.tiles)
        offsets = {s.path: sum(counts[:j]) for j, s in enumerate(unique)}

        def tile_place(key: ResumeKey) -> int | None:
            offset = offsets.get(key[0])
            return None if offset is None else offset + int(key[1])
        return tile_place
    feature_index = {str(f.id): i for i, f in enumerate(features)}

    def region_place(key: ResumeKey) -> int | None:
        index = feature_index.get(str(key[1]))
        scene = scene_index.get(key[0], 0 if key[0] == "" else None)     # "": a region outside every scene
        return None if index is None or scene is None else index * len(unique) + scene
    return region_place


def check_same_tile_grid(output: str, tiles: TileOptions) -> None:
    """OptionsError before anything is written when a tiles resume would cut another grid than the
    output's earlier tile runs: tiles are keyed by their index, so the rows there would count as
    done for tiles they are not."""
    grids = sorted(earlier_tile_grids(output))
    if grids and (tiles.size, tiles.overlap) not in grids:
        cut = ", ".join(f"{size} px, overlap {overlap}" for size, overlap in grids)
        size, overlap = grids[-1]
        raise OptionsError(f"--resume: the tiles in {output} were cut at {cut}; this run asks for {tiles.size} px, "
                           f"overlap {tiles.overlap}. Resume with --tile-size {size} --tile-overlap {overlap}, or "
                           f"write this grid to another output.",
                           "tile_size" if all(size != tiles.size for size, _ in grids) else "tile_overlap")


def warn_of_appended_keys(existing: AbstractSet[ResumeKey], place: Callable[[ResumeKey], int | None],
                          output: str | None) -> None:
    """An appended run over regions the layer holds already (same scene and id) adds a second row
    for each; a later --resume counts either as done. Said now, while another layer is still an option."""
    again = sum(1 for key in existing if place(key) is not None)
    if again:
        log.warning("%d region(s) of this run are in %s already (same scene and id): the layer will hold a row of "
                    "each run, and a later --resume takes either as done. To keep the runs apart, write this one "
                    "to another output.", again, output)


def describe_to_output(scenes: list[Scene], features: list[AOIFeature], engine: Engine, output: str | None, mode: str,
                       run: RunInfo, options: DescribeOptions, *, guides: list[AOIFeature] | None = None,
                       regions_layer: str = "regions", skip_done: bool = True,
                       on_batch: Callable[[int, int | None], None] = lambda done, total: None,
                       on_outcomes: Callable[[list[Outcome]], None] = lambda outcomes: None,
                       work: Iterable[WorkItem] | None = None,
                       should_cancel: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """An engine's outcomes for opened scenes, committed batch by batch to `output` (the one loop
    that writes rows: the CLI's, the Python API's and the worker/server's; output None: nothing is
    written, the outcomes only go to `on_outcomes`).

    `on_batch(rows_done, rows_expected or None)` after each committed batch (a progress bar; the
    total is known for tiles and for the regions of one scene: expected_rows), `on_outcomes(outcomes)`
    with each batch's outcomes once committed (the service's answer entries), skip_done: in mode
    "resume", leave out what the output holds already (False: describe everything again, replacing
    those rows), `work`: the work items when the caller pairs regions with scenes itself (a request's
    per-region chips; default: every region on each scene that covers it), `should_cancel()` checked
    between batches. Returns the JSON summary; "cancelled": true when should_cancel stopped it
    (what was written is kept). The model is loaded only if something is left to describe.
    """
    chip = engine.model.chip
    options = options.for_model(engine.model)
    if options.tiles is None:
        preflight(scenes, features, chip)
    elif mode == "resume" and output is not None:
        check_same_tile_grid(output, options.tiles)
    if options.strict:
        engine.check_prompt(options.prompt, strict=True)   # refused before the output exists
    timings = Timings()
    counts = {"described": 0, "failed": 0}
    started = time.perf_counter()
    if output is not None and mode == "resume" and not os.path.exists(output):
        log.warning("--resume: %s does not exist yet, so this is a new output (check the name if a run was to be "
                    "continued).", output)
    opened = (open_output(output, mode=mode, run=run, regions_layer=regions_layer) if output is not None
              else contextlib.nullcontext(None))
    with opened as out:
        for line in run.parameters.get("warnings", ()):    # the scenes' (jobs.scene_warnings), once the output
            log.warning(line)                                # is open: a refused output says only why
        tiles = options.tiles is not None
        held: AbstractSet[ResumeKey] = ((out.completed_tile_keys() if tiles else out.completed_region_keys())
                                        if out is not None and mode == "resume" and skip_done else set())
        place = row_order(scenes, features, options)
        done = {key for key in held if place(key) is not None}      # this run's: not the layer's other rows
        if out is not None and mode == "append" and not tiles:
            warn_of_appended_keys(out.completed_region_keys(), place, output)
        log.info("output %s (%s): %d %s already done; chips of %d px, context %.2f, min window %d px, "
                 "batches of %d", output, mode, len(done), options.unit, chip.input_size, chip.context,
                 chip.min_window, options.batch_size)
        # tile or region records, as `tiles` says
        write: Callable[[list[Any], list[ObjectRecord]], None] = (
            (out.write_tiles if tiles else out.write_regions) if out is not None else lambda rows, objects: None)
        if out is not None:
            out.follow_order(place)
        expected = expected_rows(scenes, features, options, len(done))
        work = work_items(scenes, features, options, chip) if work is None else work
        if guides is not None:
            work = attach_guides(work, guides, options.max_guides)
        for outcomes in engine.outcomes(work, options, skip=done, timings=timings, should_cancel=should_cancel):
            t = time.perf_counter()
            objects = [obj for o in outcomes for obj in o.objects]
            write([o.record for o in outcomes], objects)      # one transaction: rows with their objects
            counts["objects"] = counts.get("objects", 0) + len(objects)
            timings.add("write", t)
            for o in outcomes:
                counts["failed" if o.record.error else "described"] += 1
            on_outcomes(outcomes)
            on_batch(counts["described"] + counts["failed"], expected)
        cancelled = should_cancel()
        if cancelled and out is not None:
            out.close("cancelled")     # `runs` says the client stopped it, not that it finished
    total = counts["described"] + counts["failed"]
    model_s = timings.seconds.get("model", 0.0)
    wall = time.perf_counter() - started
    return {"output": None if output is None else str(output), "mode": mode, "model": engine.model.model_id,
            "device": engine.device,
            "engine": engine.name, "scenes": [s.path for s in scenes], "unit": options.unit,
            "described": counts["described"], "failed": counts["failed"], "already_done": len(done),
            "cancelled": bool(cancelled), "timings_s": timings.as_dict(),
            **({"objects": counts.get("objects", 0)} if guides is not None else {}),
            "reads": timings.counts.get("reads", 0),
            "per_second": round(timings.counts.get("described", 0) / model_s, 3) if model_s else None,
            "rows_per_second": round(total / wall, 3) if wall and total else None,
            **engine.summary_extras()}
