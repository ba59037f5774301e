"""One attribute-style request with `logprobs` to an OpenAI-compatible endpoint, and the `object_p`
mgimm-geo reads from its answer (mgimm_core/endpoint/chat.py `value_probability`), as JSON.

    python scripts/endpoint_logprobs.py http://127.0.0.1:8000/v1 SERVED_ID      # a vLLM server

The answer is held to one of two JSON objects by a regular expression (vLLM's `structured_outputs`)
so that even a random model (scripts/third_party_endpoint.sh), which under a JSON schema writes
whitespace or one string forever, closes it in a few tokens; the point is the server's
log-probability answer, not the words.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from mgimm_core.endpoint import EndpointClient
from mgimm_core.endpoint.chat import answer_text, chat_request, png_data_uri, value_probability

ANSWERS = r'\{"object": "(vehicle|storage tank)"\}'


def main(url: str, served: str) -> None:
    client = EndpointClient(url, retries=0)
    chip = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    body = chat_request(served, "Which object is this?", png_data_uri(chip), 32, logprobs=True)
    body["structured_outputs"] = {"regex": ANSWERS}
    response = client.post("/chat/completions", body)
    text = answer_text(response)
    content = ((response.get("choices") or [{}])[0].get("logprobs") or {}).get("content") or []
    print(json.dumps({"answer": text, "tokens": len(content), "object_p": value_probability(response, text, "object")}))


if __name__ == "__main__":
    main(*sys.argv[1:])
