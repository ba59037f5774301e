"""LoRA on the language model (peft): add, merge for inference.

The model's config records whether unmerged adapters are present (`use_lora`), so a checkpoint
saved mid-training reloads with the same module names; merged checkpoints are plain LMs again.
"""

from __future__ import annotations

# peft is imported inside the functions that need it: importing it costs ~1.8 s, and a merged
# checkpoint (every exported model, the demo model included) runs without it.

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peft import LoraConfig, PeftMixedModel, PeftModel
    from torch import nn

    from .configuration_mgimm import MGIMMConfig
    from .modeling_mgimm import MGIMMForConditionalGeneration


def lora_config_from(config: MGIMMConfig) -> LoraConfig:
    """peft LoraConfig from the MGIMM config's lora_* fields (targets: "all-linear" = every linear
    layer of the LM except its output head)."""
    from peft import LoraConfig

    targets = config.lora_target_modules
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def wrap_with_lora(language_model: nn.Module, config: MGIMMConfig) -> PeftModel | PeftMixedModel:
    """Return the LM wrapped in a peft model with fresh adapters (B initialised to zero, so the
    output is unchanged until training)."""
    from peft import get_peft_model

    return get_peft_model(language_model, lora_config_from(config))


def add_lora(model: MGIMMForConditionalGeneration, **settings: Any) -> MGIMMForConditionalGeneration:
    """Give `model.language_model` LoRA adapters; settings override lora_r, lora_alpha,
    lora_dropout, lora_target_modules. Returns the model (changed in place)."""
    if model.config.use_lora:
        raise ValueError("the language model already has LoRA adapters: merge_lora first or keep them")
    for key, value in settings.items():
        setattr(model.config, f"lora_{key}" if not key.startswith("lora_") else key, value)
    model.language_model = wrap_with_lora(model.language_model, model.config)
    model.language_model.train(model.training)  # new dropout layers must follow the model's mode
    model.config.use_lora = True
    return model


def merge_lora(model: MGIMMForConditionalGeneration) -> MGIMMForConditionalGeneration:
    """Fold the adapters into the LM weights (for inference and serving); no-op without LoRA."""
    if not model.config.use_lora:
        return model
    from peft import PeftModel

    if isinstance(model.language_model, PeftModel):
        model.language_model = model.language_model.merge_and_unload()
    model.config.use_lora = False
    return model
