"""Where `describe` runs: in this process (`local`) or on a Ray cluster (`ray`).

An engine is a small protocol (`Engine`): the model's identity and chip settings (`model`, a
`ModelDirectory`, known without loading weights), `device`, `outcomes(work, options, ...)` yielding
lists of `Outcome`s (the one loop, `mgimm_core.pipeline.describe_work`, runs inside it), extra
summary fields, and `close()`. Ray is an optional extra, imported only by `open_engine("ray")`.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any, Callable, Iterable, Iterator, Protocol, TYPE_CHECKING, cast


from mgimm_core.errors import OptionsError
from mgimm_core.load_options import LoadOptions
from mgimm_core.model_dir import ModelDirectory

if TYPE_CHECKING:
    from mgimm_core.endpoint.served import EndpointModel
    from pathlib import Path

    from mgimm_core.output.schema import ResumeKey
    from mgimm_core.pipeline import DescribeOptions, Outcome, Timings, WorkItem

ENGINES = ("local", "ray")


class Engine(Protocol):
    # read-only: engines set them as class attributes, instance attributes or properties
    @property
    def name(self) -> str: ...
    @property
    def supports_tiles(self) -> bool: ...
    @property
    def supports_guides(self) -> bool: ...
    @property
    def model(self) -> ModelDirectory | EndpointModel: ...
    @property
    def load(self) -> LoadOptions: ...
    @property
    def device(self) -> str: ...

    def outcomes(self, work: Iterable[WorkItem], options: DescribeOptions, *, skip: AbstractSet[ResumeKey],
                 timings: Timings | None, should_cancel: Callable[[], bool]) -> Iterator[list[Outcome]]: ...

    def summary_extras(self) -> dict[str, Any]: ...

    def check_prompt(self, prompt: str | None, strict: bool) -> None:
        """Warn about (strict: refuse) prompt words the model does not know, before any output is
        written; engines that load the model elsewhere check on the first batch instead."""

    def close(self) -> None: ...


def open_engine(name: str, model_dir: str | Path | ModelDirectory | None = None,
                load: LoadOptions = LoadOptions(), *, address: str | None = None, workers: int | None = None,
                scene_options: dict[str, Any] | None = None) -> Engine:
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
