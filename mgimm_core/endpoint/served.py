"""Which model an endpoint serves, and how regions reach it: the endpoint's `ModelDirectory`.

`GET {base}/v1/models` names the served ids. The served model is `--served-model`, else the only
id listed; its family (region convention, questions) is `--family`, else what a mgimm-geo server
says of it (its `mgimm` extension field), else the one family whose served-id patterns match
(mgimm_core.families.for_served_id). A mgimm-geo server also tells its chip settings, so chips
are cut exactly as its own model would cut them; other endpoints get the family's chip size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mgimm_core.errors import EndpointRefusedError, ModelError, OptionsError
from mgimm_core.families import all_families, family as family_named, for_served_id
from mgimm_core.families._transformers import TransformersFamily
from mgimm_core.families.base import DEFAULT_CONTEXT, DEFAULT_MIN_WINDOW, Family
from mgimm_core.regions import ChipSettings

from mgimm_core.answers import OPENAI_EXTENSION as EXTENSION

from .http import EndpointClient

log = logging.getLogger(__name__)

#: Chip side for endpoint families that state none.
ENDPOINT_CHIP_SIZE = 448


@dataclass(frozen=True)
class EndpointOptions:
    """How to reach the served model: its id, family, concurrent requests, timeout and retries."""

    served_model: str | None = None
    family: str | None = None
    concurrency: int = 4
    timeout: float = 300.0
    retries: int = 4

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise OptionsError(f"concurrency {self.concurrency}: give at least 1.", "concurrency")
        if not self.timeout > 0:
            raise OptionsError(f"timeout {self.timeout}: give a positive number of seconds.", "timeout")
        if self.retries < 0:
            raise OptionsError(f"retries {self.retries}: give 0 or more.", "retries")


@dataclass(frozen=True)
class EndpointModel:
    """The served model as the describe loop and the files job see a model directory."""

    url: str
    model_id: str
    chip: ChipSettings
    family: Family
    mgimm_server: bool                       # a mgimm-geo server: regions go in its extension field
    owned_by: str | None = None              # what /v1/models says serves it (vllm, llamacpp, ...)
    batch: int = 16
    card: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None                # no weights here to hash: runs record the URL and id
    kind: Any = None                         # no folder: Family.region_method reads nothing from it

    @property
    def path(self) -> str:
        return self.url

    @property
    def format(self) -> str:
        return self.family.name

    @property
    def default_batch_size(self) -> int:
        return self.batch


def resolve(client: EndpointClient, options: EndpointOptions) -> EndpointModel:
    """The served model of `client`'s endpoint (see the module docstring); OptionsError names the
    option to give (--served-model, --family) when it cannot be told."""
    entries: list[dict[str, Any]] = []
    try:
        listed = client.get("/models").get("data")
        entries = [e for e in listed if isinstance(e, dict) and isinstance(e.get("id"), str)] \
            if isinstance(listed, list) else []
    except EndpointRefusedError:
        if not (options.served_model and options.family):
            raise
    ids = [e["id"] for e in entries]
    served = options.served_model
    if served is None:
        if len(ids) != 1:
            raise OptionsError(f"{client.base_url} serves {len(ids)} models ({', '.join(ids) or 'none listed'}); "
                               f"name one with --served-model.", "served_model")
        served = ids[0]
    elif entries and served not in ids:
        raise OptionsError(f"{client.base_url} does not serve {served!r}; it lists {', '.join(ids)}. "
                           f"Give one of those as --served-model.", "served_model")
    entry = next((e for e in entries if e["id"] == served), {})
    extension = entry.get(EXTENSION) if isinstance(entry.get(EXTENSION), dict) else None
    chosen = _family(served, options.family, extension)
    if chosen.region_as == "tokens" and extension is None:
        raise OptionsError(f"{served!r} is a {chosen.title} model: its region tokens cannot go through a generic "
                           f"endpoint. Serve it with `mgimm-geo serve`, or give the served model's own family "
                           f"with --family.", "family")
    if extension is None and not isinstance(chosen, TransformersFamily):
        raise OptionsError(f"--family {chosen.name}: {chosen.title} models are asked through `mgimm-geo serve` "
                           f"only; for other endpoints give a family with its own questions (e.g. --family "
                           f"generic).", "family")
    chip = _chip(chosen, extension)
    log.info("endpoint %s: served model %s, family %s, chips of %d px", client.base_url, served, chosen.name,
             chip.input_size)
    card = extension.get("trained_on") if extension is not None else None
    return EndpointModel(client.base_url, served, chip, chosen, extension is not None,
                         owned_by=entry.get("owned_by") if isinstance(entry.get("owned_by"), str) else None,
                         batch=max(16, 4 * options.concurrency), card=card if isinstance(card, dict) else {})


def _family(served: str, name: str | None, extension: dict[str, Any] | None) -> Family:
    known = ", ".join(f.name for f in all_families())
    if name is None and extension is not None and isinstance(extension.get("family"), str):
        name = extension["family"]
    if name is not None:
        try:
            return family_named(name)
        except ModelError:
            raise OptionsError(f"--family {name!r} is not known; give one of {known}.", "family") from None
    guessed = for_served_id(served)
    if guessed is None:
        raise OptionsError(f"cannot tell the model family (its region convention) of the served model {served!r}; "
                           f"give --family NAME, one of {known} (generic: the region outlined on the chip).",
                           "family")
    return guessed


def _chip(chosen: Family, extension: dict[str, Any] | None) -> ChipSettings:
    if extension is not None:
        try:
            return ChipSettings(input_size=int(extension["chip_size"]),
                                context=float(extension.get("chip_context", DEFAULT_CONTEXT)),
                                min_window=int(extension.get("chip_min_window", DEFAULT_MIN_WINDOW)))
        except (KeyError, TypeError, ValueError):
            log.warning("the endpoint's %s field has no usable chip settings; using the family's", EXTENSION)
    return ChipSettings(input_size=chosen.default_chip_size or ENDPOINT_CHIP_SIZE, context=DEFAULT_CONTEXT,
                        min_window=DEFAULT_MIN_WINDOW)
