"""Where `describe` runs: in this process (`local`) or on a Ray cluster (`ray`).

An engine is a small protocol (`Engine`): the model's identity and chip settings (`model`, a
`ModelDirectory`, known without loading weights), `device`, `outcomes(work, options, ...)` yielding
lists of `Outcome`s (the one loop, `mgimm_core.pipeline.describe_work`, runs inside it), extra
summary fields, and `close()`. Ray is an optional extra, imported only by `open_engine("ray")`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol, cast

from mgimm_core.errors import OptionsError
from mgimm_core.model_dir import ModelDirectory

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class LoadOptions:
    """How the model is loaded and decodes: device, answer length, compiled decode, torch threads,
    repetition guard, agreement with the attribute answers."""

    device: str = "auto"
    max_new_tokens: int = 200
    compile: bool = False
    threads: int | None = None         # None: mgimm_core.threads.default_threads() at load time
    no_repeat_ngram: int = 0           # opt-in: no n-gram of new tokens twice (breaks phrases); 0: off
    agree: bool = True                 # descriptions name objects with their attribute answers (Describer)
    region_as: str | None = None       # how a region reaches the model (families/regions.py REGION_AS); None: family's
    endpoint: Any = None               # --model URL: mgimm_core.endpoint.EndpointOptions (None: its defaults)

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise OptionsError(f"max new tokens {self.max_new_tokens}: give at least 1.", "max_new_tokens")
        if self.threads is not None and self.threads < 1:
            raise OptionsError(f"threads {self.threads}: give at least 1.", "threads")
        from mgimm_core.families.regions import REGION_AS

        if self.region_as is not None and self.region_as not in REGION_AS:
            raise OptionsError(f"region as {self.region_as!r}: use one of {', '.join(REGION_AS)}.", "region_as")
        if self.no_repeat_ngram < 0 or self.no_repeat_ngram == 1:
            raise OptionsError(f"repetition guard {self.no_repeat_ngram}: give 0 (off) or an n-gram length of at "
                               f"least 2.", "no_repeat_ngram")


class Engine(Protocol):
    name: str
    supports_tiles: bool
    model: ModelDirectory
    load: LoadOptions
    device: str

    def outcomes(self, work: Iterable, options, *, skip: set | frozenset, timings,
                 should_cancel: Callable[[], bool]) -> Iterator[list]: ...

    def summary_extras(self) -> dict: ...

    def check_prompt(self, prompt: str | None, strict: bool) -> None:
        """Warn about (strict: refuse) prompt words the model does not know, before any output is
        written; engines that load the model elsewhere check on the first batch instead."""

    def close(self) -> None: ...


def open_engine(name: str, model_dir=None, load: LoadOptions = LoadOptions(), *, address: str | None = None,
                workers: int | None = None, scene_options: dict | None = None) -> Engine:
    """The engine `name` for the model in `model_dir` (default: the demo model), or for the model
    an endpoint serves when `model_dir` is an http(s) URL (load.endpoint: mgimm_core.endpoint.EndpointOptions).

    local: loads the model in this process on first use (a run with nothing to describe never
    imports torch). ray: starts the actors now, each loading the model once; scene_options
    (bands, nodata) are what each actor opens scenes with.
    """
    from mgimm_core.endpoint import is_endpoint_url, open_endpoint_engine

    if is_endpoint_url(model_dir):
        if name != "local":
            raise OptionsError(f"engine {name!r}: a served model (--model URL) is asked from this process; "
                               f"drop --engine (the endpoint's server does the work).", "engine")
        return cast(Engine, open_endpoint_engine(model_dir, load))
    model = ModelDirectory.resolve(model_dir)
    model.family.check_region_as(load.region_as)     # a way the family cannot take: refused before any output
    if name == "local":
        from .local import LocalEngine

        return cast(Engine, LocalEngine(model, load))
    if name == "ray":
        from .ray_engine import RayEngine

        return cast(Engine, RayEngine.start(model, load, address=address, workers=workers,
                                            scene_options=scene_options or {}))
    raise OptionsError(f"engine {name!r}: use one of {', '.join(ENGINES)}", "engine")


__all__ = ["ENGINES", "Engine", "LoadOptions", "open_engine"]
