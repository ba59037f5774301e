"""The files job: scene paths + an AOI source (or tiles) + options -> an output layer.

One job for every caller that describes files: the CLI's `describe`, the worker/server's
`describe_file` request and the Python API (`mgimm_core.api`). Each builds a `FilesJob` once and
hands it to `run_files_job` with an engine.
"""

from __future__ import annotations

import logging
from collections import Counter
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from mgimm_core.errors import CRSError, OptionsError
from mgimm_core.model_card import gsd_warning, synthetic_warning
from mgimm_core.output import MODES, RunInfo
from mgimm_core.pipeline import DescribeOptions, Outcome, WorkItem, describe_to_output
from mgimm_core.regions import AOIFeature, check_unique_ids, read_aoi
from mgimm_core.scene import Scene, expand_scene_paths, normalise_scene_path

if TYPE_CHECKING:
    from mgimm_core.engines import Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AOISource:
    """Where the regions come from: the arguments of `mgimm_core.regions.read_aoi`."""

    source: str
    layer: str | None = None
    crs: str | None = None
    buffer: float | None = None


@dataclass(frozen=True)
class FilesJob:
    """Everything one describe run over files needs, checked once when built."""

    scenes: tuple[str, ...]
    output: str | None                  # None: nothing written (a worker/server `describe` without output)
    mode: str = "create"                # create | overwrite | append | resume
    aoi: AOISource | None = None
    bands: tuple[int, ...] | None = None
    nodata: float | None = None
    percentiles: tuple[float, float] | None = None     # the scene-wide stretch (Scene.open; None: its default)
    value_range: tuple[float, float] | None = None     # ... or fixed source values for 0 and 255
    options: DescribeOptions = field(default_factory=DescribeOptions)
    guide: AOISource | None = None      # guided runs: a polygon layer of objects (mgimm_core/guides.py)
    # regions read already (a request's WKT), instead of aoi; all described (resume replaces their rows)
    regions: tuple[AOIFeature, ...] | None = None
    guides: tuple[AOIFeature, ...] | None = None    # guide objects read already (a request's WKT), with guide
    regions_layer: str = "regions"      # the output's regions layer

    def __post_init__(self) -> None:
        if not self.scenes:
            raise OptionsError("no scene given: name at least one raster (file, folder of rasters or VRT).",
                               "scenes")
        if self.mode not in MODES:
            raise OptionsError(f"output mode {self.mode!r}: use one of {', '.join(MODES)}.", "mode")
        if self.aoi is not None and self.regions is not None:
            raise OptionsError("an AOI file and regions given inline exclude each other.", "aoi")
        if self.options.tiles is None and self.aoi is None and self.regions is None:
            raise OptionsError("nothing to describe: give an AOI (the regions to describe) or ask for tiles "
                               "(every tile of each scene).", "aoi")
        if self.options.tiles is not None and self.aoi is not None:
            raise OptionsError("an AOI and tiles mode exclude each other: describe the AOI's regions, or every "
                               "tile of each scene, in separate runs.", "tiles")

    @property
    def scene_options(self) -> dict[str, Any]:
        """How each raster of the job is opened: `Scene.open`'s keyword arguments."""
        return {"bands": self.bands, "nodata": self.nodata, "percentiles": self.percentiles,
                "value_range": self.value_range}

    def parameters(self, scene_paths: list[str], engine: Engine) -> dict[str, Any]:
        """What the `runs` table records about this job."""
        return {"scenes": scene_paths, "aoi": self.aoi.source if self.aoi else None,
                "layer": self.aoi.layer if self.aoi else None, **self.scene_options,
                "guide": self.guide.source if self.guide else None,
                **({"regions": len(self.regions)} if self.regions is not None else {}),
                **({"guides": len(self.guides)} if self.guides is not None else {}),
                "engine": engine.name, "device": engine.device, "max_new_tokens": engine.load.max_new_tokens,
                "compile": engine.load.compile, "no_repeat_ngram": engine.load.no_repeat_ngram,
                "agree": engine.load.agree, "region_as": engine.model.family.check_region_as(engine.load.region_as),
                **self.options.parameters()}


def run_files_job(job: FilesJob, engine: Engine, *, check_path: Callable[[str, str], str] = lambda path, what: path,
                  open_scene: Callable[..., Scene] = Scene.open,
                  on_batch: Callable[[int, int | None], None] = lambda done, total: None,
                  on_outcomes: Callable[[list[Outcome]], None] = lambda outcomes: None,
                  should_cancel: Callable[[], bool] = lambda: False, request: str | None = None,
                  scenes: list[Scene] | None = None, source_pixels_per_pixel: float | list[float] = 1.0,
                  work: Iterable[WorkItem] | None = None) -> dict[str, Any]:
    """Open the job's inputs, describe them with `engine` into the job's output; the JSON summary.

    check_path(path, what): the server's path policy, applied to every raster a folder expands to
    (and to the AOI), returning the path to use; the local default accepts every path.
    open_scene(path, **job.scene_options): how each raster is opened (the server's opens it under its
    file boundary, mgimm_core/service/handlers.py); default `Scene.open`.
    on_outcomes(outcomes): each committed batch's outcomes (the worker/server's answer entries).
    request: the protocol request that ran the job (recorded in `runs`).
    scenes: the job's scenes opened already (a request's raster_b64: the caller closes them);
    source_pixels_per_pixel: for a chip decimated from a larger raster, as `scene_warnings` takes it
    (a list: one per opened scene, each chip its own); work: the regions paired with their scenes by the
    caller (a request's per-region chips; describe_to_output places each region on every scene otherwise).
    """
    started = time.perf_counter()
    if (job.guide is not None or job.guides) and not engine.supports_guides:
        raise OptionsError(f"guide objects cannot be sent to the {engine.name} engine's model yet; describe the "
                           f"guided run with a local model.", "guide")
    if job.options.tiles is not None and not engine.supports_tiles:
        raise OptionsError(f"tiles are not supported by the {engine.name} engine yet; describe tiles with the "
                           f"local engine (tiles of one scene are read in block order on one machine).", "engine")
    # Each file checked as given (a link named as such), then recorded under its resolved name.
    paths = ([str(s.path) for s in scenes] if scenes is not None else
             [normalise_scene_path(check_path(p, "raster")) for p in expand_scene_paths(list(job.scenes))])
    repeated = sorted(path for path, times in Counter(paths).items() if times > 1)
    if repeated:
        log.warning("scene(s) given more than once are described once: %s", ", ".join(repeated))
        paths = list(dict.fromkeys(paths))
    features = list(job.regions or [])
    if job.aoi is not None:
        aoi = job.aoi
        features = read_aoi(check_path(aoi.source, "AOI"), layer=aoi.layer, buffer=aoi.buffer, crs=aoi.crs)
        log.info("read %d region(s) from %s", len(features), aoi.source)
    guides = None if job.guides is None else list(job.guides)
    if job.guide is not None:
        guide = job.guide
        guides = read_aoi(check_path(guide.source, "guide layer"), layer=guide.layer, buffer=guide.buffer,
                          crs=guide.crs) + (guides or [])
        log.info("read %d guide object(s) from %s", len(guides), guide.source)
        if job.guides:
            check_unique_ids(guides, f"{guide.source} and the guide objects given inline")
    opened: list[Scene] = list(scenes or [])
    try:
        for path in paths if scenes is None else []:
            scene = open_scene(path, **job.scene_options)
            opened.append(scene)
            log.info("scene %s: %d x %d pixels, bands %s shown, CRS %s", path, scene.width, scene.height,
                     ",".join(map(str, scene.band_indexes)), scene.crs.to_string() if scene.crs else "none")
        parameters = job.parameters(paths, engine)
        scales = (source_pixels_per_pixel if isinstance(source_pixels_per_pixel, list)
                  else [source_pixels_per_pixel] * len(opened))
        gsd_notes: list[str] = []
        # every scene is read: tiles, one scene, or a request's chips (each holds its region)
        read_anyway = job.options.tiles is not None or len(opened) == 1 or work is not None
        for scene, scale in zip(opened, scales):
            gsd_notes += [w for w in scene_warnings([scene], engine.model.card, source_pixels_per_pixel=scale,
                                                    stretch=read_anyway)
                          if w not in gsd_notes]
        if gsd_notes:
            parameters["warnings"] = gsd_notes
        if request:
            parameters["request"] = request
        run = RunInfo(model_id=engine.model.model_id, model_sha256=engine.model.sha256, parameters=parameters)
        summary = describe_to_output(opened, features, engine, job.output, job.mode, run, job.options,
                                     guides=guides, regions_layer=job.regions_layer,
                                     skip_done=job.regions is None,      # a request's regions are all answered
                                     on_batch=on_batch,
                                     on_outcomes=on_outcomes, work=work, should_cancel=should_cancel)
    finally:
        for scene in opened if scenes is None else []:
            scene.close()
    summary["seconds"] = round(time.perf_counter() - started, 2)
    if gsd_notes:
        summary["warnings"] = gsd_notes
    return summary


def scene_warnings(scenes: list[Scene], card: dict[str, Any], *, source_pixels_per_pixel: float = 1.0,
                   stretch: bool = True) -> list[str]:
    """One line per scene whose pixel size is far from what the model's card says it was trained
    on, one per real scene read by a model trained on synthetic scenes only (mgimm_core/model_card.py),
    and what the scene's stretch warned of (unmarked 0 fill, a colour table: mgimm_core/scene.py);
    recorded in `runs` and the summary, and logged once the output is open (`describe_to_output`:
    a refused output says only why).

    source_pixels_per_pixel: for a chip decimated from a larger raster (the QGIS plugin's server
    chips), how many of the raster's pixels one chip pixel spans: the raster's pixels are judged.
    stretch: compute each scene's stretch now for its warnings (a read of up to ~1M pixels); False
    where the run may not read the scene at all (regions over several scenes): its stretch then
    warns on stderr when the scene is first read."""
    out: list[str] = []
    for scene in scenes:
        lines = []
        try:
            lines.append(gsd_warning(card, scene.gsd_m() / source_pixels_per_pixel, str(scene.path)))
        except CRSError:
            pass
        lines.append(synthetic_warning(card, scene.tags, str(scene.path)))
        if stretch:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _ = scene.stretch           # computed now (it is kept), so its warnings are the run's
            lines.extend(str(w.message) for w in caught)
        out.extend(filter(None, lines))
    return out
