"""Families that run inside this project's MGIMM model class (MGIMM itself and the LLaVA-1.5 line):
their describer is `mgimm_core.describer.Describer`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mgimm_core.families.base import Family

if TYPE_CHECKING:
    import torch
    from mgimm_core.load_options import LoadOptions
    from mgimm_core.model_formats import ModelKind


class MGIMMRuntimeFamily(Family):
    """A family whose weights load into `MGIMMForConditionalGeneration` (load_model)."""

    def region_ways(self) -> tuple[str, ...]:
        return (self.region_as,)

    def load_model(self, kind: ModelKind, device: str, dtype: torch.dtype) -> tuple[Any, Any]:
        """(model, processor) on `device` in `dtype`."""
        raise NotImplementedError

    def load(self, kind: ModelKind, device: torch.device, options: LoadOptions) -> Any:
        from mgimm_core.describer import Describer
        from mgimm_core.model.generation_mgimm import inference_dtype

        self.check_region_as(getattr(options, "region_as", None))
        model, processor = self.load_model(kind, str(device), inference_dtype(device))
        return Describer(model, processor, kind.path.name, device, max_new_tokens=options.max_new_tokens,
                         model_dir=kind.path, compile=options.compile, no_repeat_ngram=options.no_repeat_ngram,
                         agree=options.agree)
