"""A served model as a describer and an engine: the one describe loop, requests instead of torch.

`EndpointDescriber` has the Describer surface (`describe(images, boxes, masks, ...)` -> one
`RegionText` per chip), so `mgimm_core.pipeline.describe_work` runs it like any local model, with
the same row builder, batching, resume and outputs. Within a batch the chips are PNG-encoded in a
thread pool ahead of their requests, and up to `concurrency` regions are asked at a time over
kept-alive connections. A region whose request fails gets its error (a stable code) in its row;
a batch in which every region found the endpoint unreachable stops the run (nothing answers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from mgimm_core.answers import ATTRIBUTE_FIELDS, OPENAI_EXTENSION, OPENAI_ROW_FIELDS, RegionText, row_attributes
from mgimm_core.errors import EndpointError, EndpointRefusedError, EndpointUnreachableError, InvalidAnswerError
from mgimm_core.load_options import LoadOptions
from mgimm_core.vocabulary import NO_OBJECT_VALUE

from . import chat
from .http import EndpointClient, api_key_from_env
from .served import EndpointModel, EndpointOptions, resolve

if TYPE_CHECKING:
    from mgimm_core.families._transformers import TransformersFamily
    from mgimm_core.families.regions import BoxLike, BoxMask
    from mgimm_core.output.schema import ResumeKey
    from mgimm_core.pipeline import DescribeOptions, Outcome, Timings, WorkItem

log = logging.getLogger(__name__)


class EndpointDescriber:
    """Asks the served model of one endpoint the attribute and description questions of regions."""

    def __init__(self, client: EndpointClient, model: EndpointModel, *, concurrency: int = 4,
                 max_new_tokens: int = 200, region_as: str | None = None) -> None:
        self.client = client
        self.model = model
        self.family = cast("TransformersFamily", model.family)   # served.resolve: the question hooks, or mgimm-geo
        self.model_id = model.model_id
        self.device = client.base_url
        self.max_new_tokens = max_new_tokens
        # a mgimm-geo server places the region its model's way (the extension field carries box and mask)
        self.region_as = "tokens" if model.mgimm_server else self.family.check_region_as(region_as)
        self._requests = ThreadPoolExecutor(concurrency, thread_name_prefix="mgimm-endpoint")
        self._encoder = ThreadPoolExecutor(2, thread_name_prefix="mgimm-png")

    @property
    def chip_size(self) -> int:
        return self.model.chip.input_size

    def check_prompt(self, prompt: str | None, strict: bool = False) -> list[str]:
        """The served model's tokenizer is not here to ask: no unknown words."""
        return []

    def close(self) -> None:
        self._requests.shutdown(wait=False, cancel_futures=True)
        self._encoder.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ the Describer surface
    def describe(self, images: Sequence[np.ndarray], boxes: Sequence[BoxLike], masks: Sequence[np.ndarray | None],
                 *, attributes: bool = True, description: bool = True, prompt: str | None = None,
                 guides: Sequence[Sequence[BoxMask]] | None = None, guides_left: Sequence[int] | None = None,
                 strict: bool = False, gsds: Sequence[float | None] | None = None) -> list[RegionText]:
        # gsds (the chips' GSDs, for MGIMM models trained with them in the question) go to a mgimm-geo server
        gsds = list(gsds) if gsds is not None else [None] * len(images)
        asks = [self._encoder.submit(self._prepare, image, box, mask, gsd)
                for image, box, mask, gsd in zip(images, boxes, masks, gsds)]
        answers = [self._requests.submit(self._ask, prepared, attributes, description, prompt) for prepared in asks]
        results = [answer.result() for answer in answers]
        errors = [r.error for r in results if r.error is not None and _run_stopping(r.error)]
        if errors and len(errors) == len(results):
            raise errors[0]                  # nothing answered: the run cannot go on (--resume finishes it)
        return results

    # ------------------------------------------------------------------ one region
    def _prepare(self, image: np.ndarray, box: BoxLike, mask: np.ndarray | None,
                 gsd_m: float | None) -> dict[str, Any]:
        """The region's data URI and how the questions name it (encoded off the request threads)."""
        if self.model.mgimm_server:
            return {"uri": chat.png_data_uri(image), "regions": [chat.mgimm_region(box, mask, gsd_m)]}
        shown, phrase = self.family.region_view(None, self.region_as, np.asarray(image), box, mask)
        return {"uri": chat.png_data_uri(shown), "phrase": phrase}

    def _ask(self, prepared: Future[dict[str, Any]], attributes: bool, description: bool,
             prompt: str | None) -> RegionText:
        result = RegionText()
        try:
            view = prepared.result()
            if self.model.mgimm_server:
                self._ask_row(result, view, attributes, description, prompt)
            else:
                self._ask_family(result, view, attributes, description, prompt)
        except (EndpointError, InvalidAnswerError) as exc:
            result.error = exc
        return result

    def _post(self, body: dict[str, Any]) -> tuple[str, bool, dict[str, Any]]:
        """The answer's text, whether the endpoint cut it at max_tokens, and the whole response."""
        response = self.client.post("/chat/completions", body)
        return chat.answer_text(response), chat.cut_short(response), response

    def _ask_row(self, result: RegionText, view: dict[str, Any], attributes: bool, description: bool,
                 prompt: str | None) -> None:
        """mgimm-geo serve: the region in the extension field, the whole row in one answer."""
        fields = ((OPENAI_ROW_FIELDS[:-1] if attributes else ()) + (("description",) if description else ()))
        body = chat.chat_request(self.model_id, prompt, view["uri"], self.max_new_tokens,
                                 schema=chat.json_schema(fields), regions=view["regions"])
        text, cut, response = self._post(body)
        values = chat.answer_object(text, fields, cut=cut)
        if attributes:
            result.attribute_text = values.pop("attribute_text") or None
            result.attributes = row_attributes({k: v for k, v in values.items() if k != "description"})
            sure = response.get(OPENAI_EXTENSION)              # the server model's own, as a local run writes them
            if isinstance(sure, dict):
                result.object_p, result.no_object_p = (_probability(sure.get(k)) for k in ("object_p", "no_object_p"))
        if description:
            result.description = values["description"]

    def _ask_family(self, result: RegionText, view: dict[str, Any], attributes: bool, description: bool,
                    prompt: str | None) -> None:
        """Any endpoint: the family's two questions, the region written its way (or marked)."""
        family, phrase = self.family, view["phrase"]
        if attributes:
            text, cut, response = self._post(chat.chat_request(
                self.model_id, family.attribute_question(phrase), view["uri"], self.max_new_tokens,
                schema=chat.json_schema(ATTRIBUTE_FIELDS), owned_by=self.model.owned_by, logprobs=True))
            result.attribute_text = text
            try:
                result.attributes = row_attributes(chat.answer_object(text, ATTRIBUTE_FIELDS, cut=cut))
            except InvalidAnswerError as exc:
                result.error = exc                  # the description is still asked (as a local run does)
            if result.attributes.get("name") not in (None, NO_OBJECT_VALUE):
                result.object_p = chat.value_probability(response, text, "object")
        if description:
            result.description = self._post(chat.chat_request(
                self.model_id, family.description_question(phrase, prompt), view["uri"], self.max_new_tokens))[0]


class EndpointEngine:
    """The engine of `--model URL`: the served model resolved now (one GET /v1/models), asked
    through the describe loop. Its `describer` is always ready (nothing to load)."""

    name = "endpoint"
    supports_tiles = True
    supports_guides = False     # guide objects cannot be sent to an endpoint model yet
    loaded = True

    def __init__(self, url: str, load: LoadOptions, options: EndpointOptions | None = None) -> None:
        options = options or EndpointOptions()
        self.load = load
        local_only = [flag for flag, changed in (("--no-agree", not load.agree), ("--compile", load.compile),
                                                 ("--no-repeat-ngram",
                                                  load.no_repeat_ngram != LoadOptions().no_repeat_ngram),
                                                 ("--threads", load.threads is not None),
                                                 ("--device", load.device != "auto")) if changed]
        if local_only:
            log.warning("%s: these set how a local model decodes; the endpoint's server decodes its own way "
                        "(a mgimm-geo server: its own options)", ", ".join(local_only))
        self.options = options
        self.client = EndpointClient(url, api_key=api_key_from_env(), timeout=options.timeout,
                                     retries=options.retries, pool_size=options.concurrency)
        self.model = resolve(self.client, options)
        self.describer = EndpointDescriber(self.client, self.model, concurrency=options.concurrency,
                                           max_new_tokens=load.max_new_tokens, region_as=load.region_as)

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def device(self) -> str:
        return self.client.base_url

    def prepare(self) -> None:
        pass

    def describe(self, images: Sequence[np.ndarray], boxes: Sequence[BoxLike], masks: Sequence[np.ndarray | None],
                 **questions: Any) -> list[RegionText]:
        return self.describer.describe(images, boxes, masks, **questions)

    def outcomes(self, work: Iterable[WorkItem], options: DescribeOptions, *,
                 skip: AbstractSet[ResumeKey] = frozenset(), timings: Timings | None = None,
                 should_cancel: Callable[[], bool] = lambda: False) -> Iterator[list[Outcome]]:
        from mgimm_core.pipeline import describe_work

        return describe_work(work, self, options, skip=skip, timings=timings, should_cancel=should_cancel)

    def check_prompt(self, prompt: str | None, strict: bool) -> None:
        pass

    def summary_extras(self) -> dict[str, Any]:
        return {"endpoint": self.client.base_url, "served_model": self.model.model_id,
                "family": self.model.family.name, "concurrency": self.options.concurrency}

    def close(self) -> None:
        self.describer.close()
        self.client.close()


def _probability(value: object) -> float | None:
    """A probability a mgimm-geo server sent (a number in 0..1), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        return None
    return float(value)


def _run_stopping(error: Exception) -> bool:
    """An error no later region can escape: no connection, or the key refused (401/403; before, with
    --served-model and --family given, a wrong key only showed as rows). A 400 or a timeout stays the
    region's row and the run goes on."""
    return isinstance(error, EndpointUnreachableError) or (
        isinstance(error, EndpointRefusedError) and getattr(error, "status", None) in (401, 403))
