"""How a model is loaded and decodes (`LoadOptions`): what every describer is loaded with, whatever
engine runs it (mgimm_core/engines re-exports it; the describer reads it without importing an engine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mgimm_core.errors import OptionsError
from mgimm_core.families.regions import REGION_AS


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

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise OptionsError(f"max new tokens {self.max_new_tokens}: give at least 1.", "max_new_tokens")
        if self.threads is not None and self.threads < 1:
            raise OptionsError(f"threads {self.threads}: give at least 1.", "threads")
        if self.region_as is not None and self.region_as not in REGION_AS:
            raise OptionsError(f"region as {self.region_as!r}: use one of {', '.join(REGION_AS)}.", "region_as")
        if self.no_repeat_ngram < 0 or self.no_repeat_ngram == 1:
            raise OptionsError(f"repetition guard {self.no_repeat_ngram}: give 0 (off) or an n-gram length of at "
                               f"least 2.", "no_repeat_ngram")
