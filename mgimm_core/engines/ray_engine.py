"""The Ray engine: region work units on a pool of Ray actors, one GeoPackage writer here.

Layout of a run:

- the driver (this process) opens the scenes for their metadata only, plans work units with
  `mgimm_core.planning` (grouped by scene, ordered by block locality), and writes the output;
- each actor (`DescribeWorker`) loads the model once (one GPU per actor when the cluster has
  GPUs, else CPU actors), opens scenes by path itself (local paths on shared storage, or GDAL
  virtual paths such as /vsis3/bucket/scene.tif), reads and describes the regions of a unit and
  returns their RegionRecords;
- the driver keeps every actor busy with up to `UNITS_IN_FLIGHT` units and writes each unit's
  records as it arrives (`ray.wait`), in one transaction per unit: a GeoPackage has one writer,
  so results never go straight from workers into the file. An interrupted run keeps what was
  written; `--resume` plans only the regions not yet in the file.

Ray is an optional extra: it is imported only when this engine starts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from mgimm_core.errors import MGIMMError, ModelError, OptionsError
from mgimm_core.model_dir import DEMO_MODEL_DIR, ModelDirectory
from mgimm_core.pipeline import DescribeOptions, Outcome, Timings, WorkItem, build_record, region_work
from mgimm_core.planning import WorkUnit, plan_units

if TYPE_CHECKING:
    from mgimm_core.load_options import LoadOptions
    from mgimm_core.output.schema import RegionRecord, ResumeKey, TileRecord
    from mgimm_core.scene import Scene

log = logging.getLogger(__name__)

RAY_MISSING = ('--engine ray needs Ray, an optional extra that is not installed here. Install it with: '
               'pip install "ray[default]"   (or: pip install "mgimm-geo[ray]")')

#: Units queued per actor: one being described, one waiting, so an actor never idles on the driver.
UNITS_IN_FLIGHT = 2

#: Scenes an actor keeps open (GDAL handles + block cache) between units.
OPEN_SCENES_PER_WORKER = 4


def import_ray() -> ModuleType:
    """The ray module, or MGIMMError naming the pip command to install it."""
    try:
        import ray
    except ImportError as exc:
        raise MGIMMError(RAY_MISSING) from exc
    return ray


class DescribeWorker:
    """Body of a Ray actor: the model loaded once, scenes opened on demand by path.

    A load failure is kept and raised by the first call, so the driver receives the ModelError
    (with its message) rather than a bare "actor died".
    """

    def __init__(self, model_dir: str | None, load: LoadOptions, scene_options: dict[str, Any]) -> None:
        from mgimm_core.engines.local import LocalEngine

        self._error: MGIMMError | None = None
        self._scenes: OrderedDict[str, Scene] = OrderedDict()
        self.scene_options = dict(scene_options or {})
        try:
            self.engine = LocalEngine(ModelDirectory.resolve(model_dir), load)
            self.engine.prepare()               # load now: a bad model fails at start, not mid-run
        except MGIMMError as exc:
            self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def info(self) -> dict[str, Any]:
        self._check()
        return {"model_id": self.engine.model_id, "device": self.engine.device,
                "model_dir": str(self.engine.model.path), "host": socket.gethostname(), "pid": os.getpid()}

    def _scene(self, path: str) -> Scene:
        from mgimm_core.scene import Scene

        if path in self._scenes:
            self._scenes.move_to_end(path)
            return self._scenes[path]
        scene = Scene.open(path, **self.scene_options)
        self._scenes[path] = scene
        while len(self._scenes) > OPEN_SCENES_PER_WORKER:
            self._scenes.popitem(last=False)[1].close()
        return scene

    def describe(self, unit: WorkUnit,
                 options: DescribeOptions) -> tuple[list[RegionRecord | TileRecord], dict[str, Any]]:
        """(records, timings) for one unit: the describe loop over its regions, in locality order."""
        self._check()
        scene = self._scene(unit.scene)
        timings = Timings()
        work = region_work([scene], [spec.to_feature() for spec in unit.features], self.engine.model.chip)
        records = [o.record for batch in self.engine.outcomes(work, options, timings=timings) for o in batch]
        return records, {"seconds": dict(timings.seconds), "counts": dict(timings.counts)}


def _raise_from_ray(exc: BaseException, what: str) -> NoReturn:
    """Turn a Ray error into the MGIMMError that caused it, or one that says where it happened."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, MGIMMError):
        raise cause from None
    raise MGIMMError(f"{what} failed on the Ray cluster: {exc}. What was written is kept; fix the "
                     f"cause and rerun with --resume.") from exc


class RayEngine:
    """A pool of DescribeWorker actors on a Ray cluster (a local one unless `address` is given)."""

    name = "ray"
    supports_tiles = False
    supports_guides = True

    def __init__(self, ray: ModuleType, model: ModelDirectory, actors: list[Any], info: dict[str, Any], *,
                 owns_ray: bool) -> None:
        self.ray = ray
        self.model = model
        self.actors = actors
        self.info = info
        self._owns_ray = owns_ray
        self._held: dict[str, float] = {}
        self.load: LoadOptions | None = None          # the LoadOptions the actors were started with (set by start)
        self._units = 0
        self.regions_per_unit: int | None = None     # default: two batches

    @classmethod
    def start(cls, model: ModelDirectory, load: LoadOptions, *, address: str | None = None, workers: int | None = None,
              scene_options: dict[str, Any] | None = None) -> "RayEngine":
        """Connect to (or start) Ray and load the model once in each of `workers` actors.

        address: a running cluster ("auto", "ray://head:10001", "head:6379"); None starts a local
            one on this machine (or reuses the one this process already started).
        workers: actors to start; default one per GPU of the cluster, else one per CPU.
        device: "auto" uses GPUs when the cluster has them; "cpu" forces CPU actors; "cuda" needs
            GPUs (each actor sees exactly one, as "cuda").
        """
        ray = import_ray()
        device = load.device
        owns = False
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            owns = True
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
        if device.startswith("cuda") and gpus == 0:
            raise ModelError(f"device {device!r} asked for, but the Ray cluster has no GPU; use --device cpu "
                             "or add GPU nodes")
        use_gpu = gpus > 0 and device != "cpu"
        count = workers or (gpus if use_gpu else cpus)
        if use_gpu and count > gpus:
            raise ModelError(f"--workers {count}: the Ray cluster has {gpus} GPU(s), one per worker; "
                             f"use --workers {gpus} or fewer")
        resources_per_actor: dict[str, float]
        if use_gpu:
            resources_per_actor, actor_device, threads = {"num_gpus": 1, "num_cpus": 1}, "cuda", None
        else:
            per = cpus / count if count > cpus else max(1, cpus // count)
            resources_per_actor, actor_device = {"num_gpus": 0, "num_cpus": per}, "cpu"
            threads = max(1, int(per))
        free = ray.available_resources()
        need: dict[str, float] = {"GPU": count} if use_gpu else {"CPU": resources_per_actor["num_cpus"] * count}
        short = {k: v for k, v in need.items() if free.get(k, 0) + 1e-9 < v}
        if short:   # actors would wait forever for resources that other work holds
            raise ModelError(f"the Ray cluster has {', '.join(f'{free.get(k, 0):g} {k}' for k in short)} free, "
                             f"{count} worker(s) need {', '.join(f'{v:g} {k}' for k, v in short.items())}; "
                             f"use fewer --workers or wait for other jobs on the cluster to finish")
        remote = ray.remote(DescribeWorker).options(max_restarts=1, max_task_retries=1, **resources_per_actor)
        actor_load = dataclasses.replace(load, device=actor_device, threads=threads)
        model_dir = None if model.model_id == "demo" and model.path == DEMO_MODEL_DIR else str(model.path)
        actors = [remote.remote(model_dir, actor_load, scene_options or {}) for _ in range(count)]
        engine = cls(ray, model, actors, {}, owns_ray=owns)
        engine.load = load
        engine._held = need
        try:
            infos = ray.get([a.info.remote() for a in actors])
        except Exception as exc:  # noqa: BLE001 - any Ray error: report its cause
            engine.close()
            _raise_from_ray(exc, "loading the model")
        engine.info = dict(infos[0], workers=count, hosts=sorted({i["host"] for i in infos}))
        log.info("ray engine: %d %s worker(s) on %s", count, actor_device, ", ".join(engine.info["hosts"]))
        return engine

    # ------------------------------------------------------------------ model identity
    @property
    def model_id(self) -> str:
        model_id: str = self.info["model_id"]
        return model_id

    @property
    def device(self) -> str:
        device: str = self.info["device"]
        return device

    @property
    def workers(self) -> int:
        return len(self.actors)

    # ------------------------------------------------------------------ running
    def stream(self, units: list[WorkUnit], options: DescribeOptions, *, timings: Timings,
               should_cancel: Callable[[], bool] = lambda: False) -> Iterator[list[RegionRecord | TileRecord]]:
        """Yield each unit's records as it finishes, keeping every actor busy."""
        ray = self.ray
        queue, in_flight = deque(units), {}

        def submit(actor: Any) -> None:       # a Ray actor handle
            unit = queue.popleft()
            in_flight[actor.describe.remote(unit, options)] = (actor, unit)

        for _ in range(UNITS_IN_FLIGHT):
            for actor in self.actors:
                if queue:
                    submit(actor)
        try:
            while in_flight:
                [ref], _ = ray.wait(list(in_flight), num_returns=1)
                actor, unit = in_flight.pop(ref)
                try:
                    records, unit_timings = ray.get(ref)
                except Exception as exc:  # noqa: BLE001
                    _raise_from_ray(exc, f"describing work unit {unit.index} ({len(unit)} regions of {unit.scene})")
                timings.merge(unit_timings)
                yield records
                if should_cancel():
                    return
                if queue:
                    submit(actor)
        finally:
            for ref in in_flight:          # cancelled or failed: drop what is still queued
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - best effort; the actors are killed at close
                    pass

    def outcomes(self, work: Iterable[WorkItem], options: DescribeOptions, *,
                 skip: AbstractSet[ResumeKey] = frozenset(), timings: Timings | None = None,
                 should_cancel: Callable[[], bool] = lambda: False) -> Iterator[list[Outcome]]:
        """The engine protocol: plan the placed regions into locality-ordered units, describe them on
        the actors (each runs the describe loop), yield each unit's outcomes as it arrives."""
        if options.tiles is not None:
            raise OptionsError("tiles are not supported with the Ray engine yet; describe tiles with the local "
                               "engine (tiles of one scene are read in block order on one machine)")
        timings = timings if timings is not None else Timings()
        t = time.perf_counter()
        plan = plan_units(work, regions_per_unit=self.regions_per_unit or 2 * (options.batch_size or 16), skip=skip)
        timings.add("plan", t)
        self._units = len(plan.units)
        if plan.errors:       # regions no scene covers: recorded here, as the local engine does
            prompt = self.model.family.recorded_prompt(options.prompt)
            yield [Outcome(build_record(item, model=self.model_id, prompt=prompt, error=item.error))
                   for item in plan.errors]
        for records in self.stream(plan.units, options, timings=timings, should_cancel=should_cancel):
            yield [Outcome(record) for record in records]

    def check_prompt(self, prompt: str | None, strict: bool) -> None:
        """Each actor checks the prompt with its own model on its first batch (mgimm_core/describer.py)."""

    def summary_extras(self) -> dict[str, Any]:
        return {"workers": self.workers, "work_units": self._units}

    def close(self) -> None:
        """Stop the actors (and the local Ray instance when this engine started it)."""
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self.actors and not self._owns_ray:    # kill is asynchronous: wait until the resources are
            deadline = time.monotonic() + 10      # back, so a next run on this cluster can place its actors
            while time.monotonic() < deadline and any(
                    self.ray.available_resources().get(k, 0) + 1e-9 < v for k, v in self._held.items()):
                time.sleep(0.1)
        self.actors = []
        if self._owns_ray:
            self.ray.shutdown()
