"""Any chat VLM without a grounding convention, reached through an endpoint (`--family generic`).

Most general VLMs served by vLLM, Ollama or llama.cpp read no region coordinates, so the region is
marked the way that works for every one of them: its outline drawn on the chip (or, with crop, the
chip cut to it). No folder is ever recognised as this family: it names a served model, not weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mgimm_core.families._transformers import TransformersFamily

if TYPE_CHECKING:
    import torch

    from mgimm_core.load_options import LoadOptions
    from mgimm_core.model_formats import ModelKind


class GenericFamily(TransformersFamily):
    name = "generic"
    title = "any chat VLM (region outlined on the chip)"
    order = 90
    region_as = "outline"
    default_chip_size = 448
    weights_hint = "served by an OpenAI-compatible endpoint (--model URL --family generic)"

    def recognise(self, config: dict[str, Any], directory: Path) -> bool:
        return False

    def load(self, kind: ModelKind, device: torch.device, options: LoadOptions) -> NoReturn:
        from mgimm_core.errors import ModelError

        raise ModelError("the generic family names a served model (--model URL --family generic), not a folder")


FAMILY = GenericFamily()
