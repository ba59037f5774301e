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

import logging
import os
import socket
import time
from collections import OrderedDict, deque
from typing import Callable

from mgimm_core.errors import MGIMMError, ModelError
from mgimm_core.output import open_output, sha256_path
from mgimm_core.pipeline import DescribeSettings, Timings, _region_record, describe_regions, preflight
from mgimm_core.planning import Plan, WorkUnit, plan_regions
from mgimm_core.prompts import DESCRIPTION_PROMPT

log = logging.getLogger(__name__)

RAY_MISSING = ('--engine ray needs Ray, an optional extra that is not installed here. Install it with: '
               'pip install "ray[default]"   (or: pip install "mgimm-geo[ray]")')

#: Units queued per actor: one being described, one waiting, so an actor never idles on the driver.
UNITS_IN_FLIGHT = 2

#: Scenes an actor keeps open (GDAL handles + block cache) between units.
OPEN_SCENES_PER_WORKER = 4


def import_ray():
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

    def __init__(self, model_dir, device: str, max_new_tokens: int, compile: bool, scene_options: dict,
                 torch_threads: int | None):
        self._error = None
        self._scenes: OrderedDict = OrderedDict()
        self.scene_options = dict(scene_options or {})
        try:
            if torch_threads:
                import torch

                torch.set_num_threads(torch_threads)
            from mgimm_core.describer import Describer

            self.describer = Describer.load(model_dir, device=device, max_new_tokens=max_new_tokens,
                                            compile=compile)
        except MGIMMError as exc:
            self._error = exc

    def _check(self):
        if self._error is not None:
            raise self._error

    def info(self) -> dict:
        self._check()
        d = self.describer
        return {"model_id": d.model_id, "device": str(d.device), "chip_size": d.chip_size,
                "model_dir": str(d.model_dir), "host": socket.gethostname(), "pid": os.getpid()}

    def model_sha256(self) -> str:
        self._check()
        return sha256_path(self.describer.model_dir)

    def _scene(self, path: str):
        from mgimm_core.scene import Scene

        if path in self._scenes:
            self._scenes.move_to_end(path)
            return self._scenes[path]
        scene = Scene.open(path, **self.scene_options)
        self._scenes[path] = scene
        while len(self._scenes) > OPEN_SCENES_PER_WORKER:
            self._scenes.popitem(last=False)[1].close()
        return scene

    def describe(self, unit: WorkUnit, settings: dict) -> tuple[list, dict]:
        """(records, seconds per stage) for one unit; regions in the unit's (locality) order."""
        self._check()
        scene = self._scene(unit.scene)
        timings = Timings()
        records = []
        features = [spec.to_feature() for spec in unit.features]
        for batch in describe_regions([scene], features, self.describer, DescribeSettings(**settings),
                                      timings=timings):
            records.extend(batch)
        return records, dict(timings.seconds)


def _raise_from_ray(exc: BaseException, what: str):
    """Turn a Ray error into the MGIMMError that caused it, or one that says where it happened."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, MGIMMError):
        raise cause from None
    raise MGIMMError(f"{what} failed on the Ray cluster: {exc}. What was written is kept; fix the "
                     f"cause and rerun with --resume.") from exc


class RayEngine:
    """A pool of DescribeWorker actors on a Ray cluster (a local one unless `address` is given)."""

    name = "ray"

    def __init__(self, ray, actors: list, info: dict, *, owns_ray: bool):
        self.ray = ray
        self.actors = actors
        self.info = info
        self._owns_ray = owns_ray
        self._sha256 = None
        self._held: dict = {}

    @classmethod
    def start(cls, model_dir=None, *, device: str = "auto", max_new_tokens: int = 200, compile: bool = False,
              address: str | None = None, workers: int | None = None,
              scene_options: dict | None = None) -> "RayEngine":
        """Connect to (or start) Ray and load the model once in each of `workers` actors.

        address: a running cluster ("auto", "ray://head:10001", "head:6379"); None starts a local
            one on this machine (or reuses the one this process already started).
        workers: actors to start; default one per GPU of the cluster, else one per CPU.
        device: "auto" uses GPUs when the cluster has them; "cpu" forces CPU actors; "cuda" needs
            GPUs (each actor sees exactly one, as "cuda").
        """
        ray = import_ray()
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
        if use_gpu:
            resources_per_actor, actor_device, threads = {"num_gpus": 1, "num_cpus": 1}, "cuda", None
        else:
            per = cpus / count if count > cpus else max(1, cpus // count)
            resources_per_actor, actor_device = {"num_gpus": 0, "num_cpus": per}, "cpu"
            threads = max(1, int(per))
        free = ray.available_resources()
        need = {"GPU": count} if use_gpu else {"CPU": resources_per_actor["num_cpus"] * count}
        short = {k: v for k, v in need.items() if free.get(k, 0) + 1e-9 < v}
        if short:   # actors would wait forever for resources that other work holds
            raise ModelError(f"the Ray cluster has {', '.join(f'{free.get(k, 0):g} {k}' for k in short)} free, "
                             f"{count} worker(s) need {', '.join(f'{v:g} {k}' for k, v in short.items())}; "
                             f"use fewer --workers or wait for other jobs on the cluster to finish")
        remote = ray.remote(DescribeWorker).options(max_restarts=1, max_task_retries=1, **resources_per_actor)
        actors = [remote.remote(None if model_dir is None else str(model_dir), actor_device, max_new_tokens,
                                compile, scene_options or {}, threads) for _ in range(count)]
        engine = cls(ray, actors, {}, owns_ray=owns)
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
        return self.info["model_id"]

    @property
    def device(self) -> str:
        return self.info["device"]

    @property
    def chip_size(self) -> int:
        return int(self.info["chip_size"])

    @property
    def workers(self) -> int:
        return len(self.actors)

    @property
    def model_sha256(self) -> str:
        """Hash of the model directory as the workers see it (the driver may not see it)."""
        if self._sha256 is None:
            try:
                self._sha256 = self.ray.get(self.actors[0].model_sha256.remote())
            except Exception as exc:  # noqa: BLE001
                _raise_from_ray(exc, "hashing the model")
        return self._sha256

    # ------------------------------------------------------------------ running
    def plan(self, scenes, features, *, regions_per_unit: int, skip: set | None = None) -> Plan:
        settings = DescribeSettings()
        return plan_regions(scenes, features, chip_size=self.chip_size, context=settings.context,
                            min_window=settings.min_window, regions_per_unit=regions_per_unit, skip=skip)

    def stream(self, units: list[WorkUnit], settings: dict, *, timings: Timings,
               should_cancel: Callable[[], bool] = lambda: False):
        """Yield each unit's records as it finishes, keeping every actor busy."""
        ray = self.ray
        queue, in_flight = deque(units), {}

        def submit(actor):
            unit = queue.popleft()
            in_flight[actor.describe.remote(unit, settings)] = (actor, unit)

        for _ in range(UNITS_IN_FLIGHT):
            for actor in self.actors:
                if queue:
                    submit(actor)
        try:
            while in_flight:
                [ref], _ = ray.wait(list(in_flight), num_returns=1)
                actor, unit = in_flight.pop(ref)
                try:
                    records, seconds = ray.get(ref)
                except Exception as exc:  # noqa: BLE001
                    _raise_from_ray(exc, f"describing work unit {unit.index} ({len(unit)} regions of {unit.scene})")
                for stage, value in seconds.items():
                    timings.seconds[stage] += value
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

    def describe_to_output(self, scenes, features, output, mode, run, *, tiles: bool = False, batch_size: int = 8,
                           prompt: str | None = None, attributes: bool = True,
                           regions_per_unit: int | None = None,
                           on_batch: Callable[[int], None] = lambda done: None,
                           should_cancel: Callable[[], bool] = lambda: False, **_tile_options) -> dict:
        """The Ray counterpart of pipeline.describe_to_output: same output, same summary keys
        (plus engine, workers, units). scenes: opened Scenes (metadata for planning); workers
        reopen them by path. regions_per_unit: default 2 batches."""
        if tiles:
            raise MGIMMError("--tiles is not supported with --engine ray yet; run it with --engine local "
                             "(tiles of one scene are read in block order on one machine)")
        preflight(scenes, features)
        timings = Timings()
        counts = {"described": 0, "failed": 0}
        settings = dict(batch_size=batch_size, prompt=prompt, attributes=attributes)
        used_prompt = prompt or DESCRIPTION_PROMPT
        started = time.perf_counter()
        units = 0
        with open_output(output, mode=mode, run=run) as out:
            done = out.completed_region_keys() if mode == "resume" else set()
            t = time.perf_counter()
            plan = self.plan(scenes, features, regions_per_unit=regions_per_unit or 2 * batch_size, skip=done)
            timings.add("plan", t)
            units = len(plan.units)
            if plan.errors:       # regions no scene covers: recorded here, as the local engine does
                self._write(out, [_region_record(name, feature, model=self.model_id, prompt=used_prompt,
                                                 error=str(error)) for name, feature, error in plan.errors],
                            counts, timings, on_batch)
            for records in self.stream(plan.units, settings, timings=timings, should_cancel=should_cancel):
                self._write(out, records, counts, timings, on_batch)
        wall = time.perf_counter() - started
        total = counts["described"] + counts["failed"]
        return {"output": str(output), "mode": mode, "model": self.model_id, "device": self.device,
                "scenes": [s.path for s in scenes], "unit": "regions", "described": counts["described"],
                "failed": counts["failed"], "already_done": len(done), "cancelled": bool(should_cancel()),
                "timings_s": timings.as_dict(), "per_second": round(total / wall, 3) if wall and total else None,
                "engine": self.name, "workers": self.workers, "work_units": units}

    @staticmethod
    def _write(out, records, counts, timings, on_batch):
        t = time.perf_counter()
        out.write_regions(records)
        timings.add("write", t)
        for r in records:
            counts["failed" if r.error else "described"] += 1
        on_batch(counts["described"] + counts["failed"])

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
