"""The MGIMM model, laid out like a Hugging Face model folder (configuration, modeling, processing)."""

from .configuration_mgimm import MGIMMConfig, demo_region_settings, tiny_config
from .generation_mgimm import load_for_inference
from .llava_mgimm import from_llava, load_llava
from .lora_mgimm import add_lora, merge_lora
from .modeling_mgimm import MGIMMCausalLMOutput, MGIMMForConditionalGeneration
from .processing_mgimm import ChipTransform, MGIMMProcessor, build_word_tokenizer
from .training_modes import configure_trainable, trainable_parameter_names


def _register_with_auto_classes() -> None:
    """Let AutoConfig / AutoModelForImageTextToText open saved MGIMM dirs (no remote code)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    AutoConfig.register("mgimm", MGIMMConfig, exist_ok=True)
    AutoModelForImageTextToText.register(MGIMMConfig, MGIMMForConditionalGeneration, exist_ok=True)


_register_with_auto_classes()

__all__ = [
    "ChipTransform", "MGIMMCausalLMOutput", "MGIMMConfig", "MGIMMForConditionalGeneration", "MGIMMProcessor",
    "add_lora", "build_word_tokenizer", "configure_trainable", "demo_region_settings",
    "from_llava", "load_for_inference", "load_llava", "merge_lora",
    "tiny_config", "trainable_parameter_names",
]
