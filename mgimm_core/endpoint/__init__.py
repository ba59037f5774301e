"""A model served by an OpenAI-compatible endpoint (vLLM, SGLang, Ollama, llama.cpp, mgimm-geo serve)
as the model of a run: `--model http://host:port/v1` (docs/protocol.md, "Endpoints").

http: kept-alive JSON requests with timeouts and retries, the API key from the environment;
served: which model is served, its family and chip settings; chat: the requests and their answers;
describer: the Describer surface and the engine the describe loop runs. No torch here.
"""

from typing import TYPE_CHECKING

from .http import API_KEY_VARIABLES, EndpointClient, api_key_from_env, is_endpoint_url
from .served import EndpointModel, EndpointOptions

if TYPE_CHECKING:
    from .describer import EndpointEngine
    from mgimm_core.load_options import LoadOptions


def open_endpoint_engine(url: str, load: "LoadOptions") -> "EndpointEngine":
    """The engine of the served model at `url` (load.endpoint: its EndpointOptions)."""
    from .describer import EndpointEngine

    return EndpointEngine(url, load, getattr(load, "endpoint", None))


__all__ = ["API_KEY_VARIABLES", "EndpointClient", "EndpointModel", "EndpointOptions", "api_key_from_env",
           "is_endpoint_url", "open_endpoint_engine"]
