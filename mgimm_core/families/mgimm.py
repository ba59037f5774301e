"""MGIMM: this project's own folders (`model_type` "mgimm"), reference imports included.

The region reaches the model as learned region tokens made from its box and polygon mask in
model-input pixels; the chip settings come from the processor file the folder was saved with.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgimm_core.errors import ModelError
from mgimm_core.families._runtime import MGIMMRuntimeFamily
from mgimm_core.families.base import DEFAULT_CONTEXT, DEFAULT_MIN_WINDOW, Licence, check_loaded
from mgimm_core.model_formats import read_json
from mgimm_core.regions import ChipSettings

if TYPE_CHECKING:
    from mgimm_core.model.modeling_mgimm import MGIMMForConditionalGeneration
    from mgimm_core.model.processing_mgimm import MGIMMProcessor
    import torch
    from mgimm_core.model_formats import ModelKind

#: Processor settings file (written by MGIMMProcessor.save_pretrained).
PROCESSOR_FILE = "mgimm_processor.json"


class MGIMMFamily(MGIMMRuntimeFamily):
    name = "mgimm"
    title = "MGIMM"
    order = 10
    region_as = "tokens"
    default_licence = Licence("Apache-2.0 (the demo model; an import keeps its source's terms)")
    weights_hint = ("the demo model ships inside mgimm-geo; `python -m training` and `mgimm-geo import-reference` "
                    "write others")

    def recognise(self, config: dict[str, Any], directory: Path) -> bool:
        model_type = config.get("model_type")
        return model_type == "mgimm" or (model_type is None and (directory / PROCESSOR_FILE).is_file())

    def region_method(self, kind: ModelKind) -> str:
        return "region tokens"

    def chip_settings(self, kind: ModelKind) -> ChipSettings:
        """Input size from the processor file (else the vision config), context and minimum window
        from the processor file when it states them."""
        settings: dict[str, Any] = {}
        for name in (PROCESSOR_FILE, "config.json"):
            if (kind.path / name).is_file():
                settings = read_json(kind.path / name)
                break
        vision = settings.get("vision_config")
        size = settings.get("image_size") or (vision.get("image_size") if isinstance(vision, dict) else None)
        if not isinstance(size, int) or size < 1:
            raise ModelError(f"{kind.path}: neither {PROCESSOR_FILE} nor config.json states the model's input size "
                             f"(image_size); export the model with save_pretrained.")
        return ChipSettings(input_size=size, context=float(settings.get("chip_context", DEFAULT_CONTEXT)),
                            min_window=int(settings.get("chip_min_window", DEFAULT_MIN_WINDOW)))

    def prompt_template(self, kind: ModelKind) -> str:
        path = kind.path / PROCESSOR_FILE
        processor = read_json(path) if path.is_file() else {}
        return str(processor.get("prompt_template") or kind.config.get("prompt_template") or "{prompt}")

    def source(self, kind: ModelKind) -> str:
        config = kind.config
        if config.get("region_box_shift") or config.get("region_prompt_size"):
            return "reference import"   # its reference-compatibility box numerics (configuration_mgimm.py)
        return str(config.get("source_format", self.name))

    def load_model(self, kind: ModelKind, device: str,
                   dtype: torch.dtype) -> tuple[MGIMMForConditionalGeneration, MGIMMProcessor]:
        from mgimm_core.model.lora_mgimm import merge_lora
        from mgimm_core.model.modeling_mgimm import MGIMMForConditionalGeneration
        from mgimm_core.model.processing_mgimm import MGIMMProcessor

        for part in ("vision_config", "text_config"):
            # without them transformers would build its default (7B-sized) parts and fill them at random
            if not isinstance(kind.config.get(part), dict):
                raise ModelError(f"{kind.path / 'config.json'}: {part} is missing or not an object; the model folder "
                                 "is damaged, copy or export it again")
        loaded: Any     # (model, loading report): output_loading_info=True, which transformers' stubs do not type
        try:  # fused scaled-dot-product attention in the LM and the vision tower (the default where supported)
            loaded = MGIMMForConditionalGeneration.from_pretrained(
                kind.path, dtype=dtype, attn_implementation="sdpa", output_loading_info=True)
        except ValueError:  # an encoder or LM without an SDPA path: its own attention
            loaded = MGIMMForConditionalGeneration.from_pretrained(kind.path, dtype=dtype, output_loading_info=True)
        model, report = loaded
        check_loaded(kind.path, report)
        merge_lora(model)
        return model.to(device).eval(), MGIMMProcessor.from_pretrained(kind.path)


FAMILY = MGIMMFamily()
