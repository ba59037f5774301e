"""The local engine: one model in this process, loaded on first use, running the describe loop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from mgimm_core.model_dir import ModelDirectory
from mgimm_core.pipeline import describe_work

if TYPE_CHECKING:
    import numpy as np

    from mgimm_core.answers import RegionText
    from mgimm_core.families.regions import BoxLike
    from mgimm_core.load_options import LoadOptions
    from mgimm_core.output.schema import ResumeKey
    from mgimm_core.pipeline import DescribeOptions, Outcome, Timings, WorkItem

log = logging.getLogger(__name__)


class LocalEngine:
    """A model directory and, once something needs it, its loaded Describer.

    It is itself the loop's `RegionModel` (model_id + describe), so the weights load only when
    the first batch is ready: `--resume` with nothing left returns without importing torch.
    """

    name = "local"
    supports_tiles = True
    supports_guides = True

    def __init__(self, model: ModelDirectory, load: LoadOptions) -> None:
        self.model = model
        self.load = load
        self._describer: Any = None     # a family's describer (mgimm_core/families), once loaded
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def loaded(self) -> bool:
        return self._describer is not None

    @property
    def describer(self) -> Any:        # a family's describer (Family.load)
        """The loaded Describer (loading it now if needed; thread-safe for the server)."""
        with self._lock:
            if self._describer is None:
                import torch  # loads only now

                from mgimm_core.describer import load_describer

                from mgimm_core.threads import default_threads

                started = time.perf_counter()
                threads = self.load.threads or default_threads()
                torch.set_num_threads(threads)
                self._describer = load_describer(self.model, options=self.load)
                log.info("model %s loaded on %s (%d torch threads) in %.1f s", self.model.model_id,
                         self._describer.device, threads, time.perf_counter() - started)
        return self._describer

    @property
    def device(self) -> str:
        """The device in use, or the one asked for while the model is not loaded yet."""
        return str(self._describer.device) if self._describer is not None else self.load.device

    def prepare(self) -> None:
        """Load the model now (the loop times this apart from describing)."""
        _ = self.describer

    def describe(self, images: Sequence[np.ndarray], boxes: Sequence[BoxLike], masks: Sequence[np.ndarray | None],
                 **questions: Any) -> list[RegionText]:
        texts: list[RegionText] = self.describer.describe(images, boxes, masks, **questions)
        return texts

    def outcomes(self, work: Iterable[WorkItem], options: DescribeOptions, *,
                 skip: AbstractSet[ResumeKey] = frozenset(), timings: Timings | None = None,
                 should_cancel: Callable[[], bool] = lambda: False) -> Iterator[list[Outcome]]:
        """The describe loop over `work` with this engine's model."""
        return describe_work(work, self, options, skip=skip, timings=timings, should_cancel=should_cancel)

    def check_prompt(self, prompt: str | None, strict: bool) -> None:
        """The prompt's unknown words, now (loads the model): a strict run stops before its output exists."""
        if prompt:
            self.describer.check_prompt(prompt, strict)

    def summary_extras(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass
