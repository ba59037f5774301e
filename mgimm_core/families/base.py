"""What a model family states about itself: the registry's entry (mgimm_core/families/__init__.py).

A family recognises its folders from their JSON files, says how a region reaches its model (learned
tokens, text in its convention, an outline drawn on the chip or a crop: mgimm_core/families/regions.py),
its prompt format, its chip size and its licence, and loads a describer: an object with MGIMM's
`Describer` surface (`describe`, `check_prompt`, `chip_size`, `device`, `model_id`, `max_new_tokens`).
Nothing here imports torch; `load` does, when it is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgimm_core.errors import ModelError
from mgimm_core.families.regions import CONVENTIONS, REGION_AS, RegionConvention
from mgimm_core.regions import ChipSettings

if TYPE_CHECKING:
    import os
    import torch
    from mgimm_core.load_options import LoadOptions
    from mgimm_core.model_formats import ModelKind

# Placement defaults for models whose files do not state them (every model trained by training/ so
# far was trained on chips placed with these; see training/demo_data.py).
DEFAULT_CONTEXT = 0.25
DEFAULT_MIN_WINDOW = 48


def check_loaded(directory: Path, report: dict[str, Any]) -> None:
    """Refuse a model whose weight files lacked tensors or held ones of the wrong shape (transformers'
    `output_loading_info`): it would run with random weights there and answer confidently."""
    missing = list(report.get("missing_keys") or [])
    mismatched = [str(k[0] if isinstance(k, tuple) else k) for k in report.get("mismatched_keys") or []]
    if missing or mismatched:
        names = ", ".join((missing + mismatched)[:5])
        raise ModelError(f"{directory}: its weight files lack {len(missing)} and mis-shape {len(mismatched)} of the "
                         f"model's tensors ({names}{' ...' if len(missing) + len(mismatched) > 5 else ''}); the "
                         f"weights do not belong to this config.json, copy or export the model folder again")


@dataclass(frozen=True)
class Licence:
    """The weights' licence as far as the family (or the folder's card) tells."""

    name: str | None = None
    non_commercial: bool = False
    note: str = ""

    def warning(self, model: str) -> str | None:
        """One line for non-commercial weights, None otherwise."""
        if not self.non_commercial:
            return None
        return (f"{model}: its weights are licensed for non-commercial use only ({self.name or 'see its card'}"
                f"{'; ' + self.note if self.note else ''}).")


class Family:
    """One model family. Subclasses set the class attributes and override what differs."""

    #: stable id (model-info's `family`, provenance); never parsed for meaning elsewhere
    name: str = ""
    #: for people (model-info's `kind`)
    title: str = ""
    #: detection order: more specific recognisers first
    order: int = 50
    #: key of regions.CONVENTIONS, or None for families with no text convention
    convention: str | None = None
    #: how a region reaches the model unless the user chooses (regions.REGION_AS)
    region_as: str = "text"
    #: chip side when the folder does not state an input size
    default_chip_size: int | None = None
    #: the weights' licence when the family alone tells it (the folder's card may say more)
    default_licence: Licence = Licence()
    #: how to get the weights onto an air-gapped machine (docs/models.md, model-info)
    weights_hint: str = ""
    #: served model ids (case-insensitive shell patterns, e.g. "*qwen2.5-vl*") an OpenAI-compatible
    #: endpoint lists for this family's models: `--model URL` guesses the family from them
    served_id_patterns: tuple[str, ...] = ()

    def recognise(self, config: dict[str, Any], directory: Path) -> bool:
        raise NotImplementedError

    def serves(self, served_id: str) -> bool:
        """True when an endpoint's served model id names a model of this family (served_id_patterns)."""
        from fnmatch import fnmatchcase

        return any(fnmatchcase(served_id.lower(), pattern.lower()) for pattern in self.served_id_patterns)

    def vision_dir(self, directory: Path, config: dict[str, Any], vision: str | os.PathLike[str] | None) -> Path | None:
        """A separate vision-tower folder the weights need (original-format LLaVA), else None."""
        return None

    # ------------------------------------------------------------------ facts
    def region_convention(self) -> RegionConvention | None:
        return CONVENTIONS[self.convention] if self.convention else None

    def region_ways(self) -> tuple[str, ...]:
        """The ways a region may reach this family's model (`--region-as`)."""
        text = ("text",) if self.convention else ()
        return text + ("outline", "crop")

    def check_region_as(self, region_as: str | None) -> str:
        """The region way to use: the family's default, or `region_as` when this family can take it."""
        if region_as is None:
            return self.region_as
        if region_as not in REGION_AS or region_as not in self.region_ways():
            from mgimm_core.errors import OptionsError

            ways = self.region_ways()
            if len(ways) == 1:       # e.g. MGIMM: region tokens from its own region module, nothing to choose
                raise OptionsError(f"region as {region_as!r}: {self.title} models take a region one way only "
                                   f"({ways[0]}); leave the option out.", "region_as")
            raise OptionsError(f"region as {region_as!r}: {self.title} models take "
                               f"{', '.join(ways)}.", "region_as")
        return region_as

    def region_method(self, kind: "ModelKind") -> str:
        """model-info's one line on how a region reaches the model."""
        convention = self.region_convention()
        if self.region_as == "text" and convention is not None:
            return f"box text in the prompt ({convention.name}, e.g. {convention.write((8, 8, 24, 24), 32, 32)})"
        return {"outline": "outline drawn on the chip", "crop": "chip cropped to the region"}.get(
            self.region_as, self.region_as)

    def input_size(self, kind: "ModelKind") -> int | None:
        """Side of the model's (square) input in pixels, from the folder's config."""
        vision = kind.config.get("vision_config") or {}
        size = kind.config.get("image_size") or vision.get("image_size")
        return size if isinstance(size, int) and size > 0 else self.default_chip_size

    def chip_settings(self, kind: "ModelKind") -> ChipSettings:
        size = self.input_size(kind)
        if size is None:
            raise ModelError(f"{kind.path}: config.json does not state the model's input size (image_size)")
        return ChipSettings(input_size=size, context=DEFAULT_CONTEXT, min_window=DEFAULT_MIN_WINDOW)

    def prompt_template(self, kind: "ModelKind") -> str:
        return "{prompt}"

    def recorded_prompt(self, prompt: str | None) -> str:
        """The description question as rows record it (`prompt`): the user's prompt, else the question
        this family is asked, with `{region}` where each region's own text goes."""
        from mgimm_core.prompts import DESCRIPTION_PROMPT

        return prompt or DESCRIPTION_PROMPT

    def licence(self, kind: "ModelKind") -> Licence:
        return self.default_licence

    def source(self, kind: "ModelKind") -> str:
        """Where the weights came from, for model-info (the family's name unless the folder says more)."""
        return self.name

    # ------------------------------------------------------------------ loading
    def load(self, kind: "ModelKind", device: torch.device, options: LoadOptions) -> Any:
        """A describer for this folder on `device` (a torch.device); `options` carries
        max_new_tokens, compile, no_repeat_ngram, agree and region_as (mgimm_core.engines.LoadOptions)."""
        raise NotImplementedError
