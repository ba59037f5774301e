"""Which parameters train: explicit flags instead of a stage string.

Reference recipes (docs/training.md), as flags:
  stage 1 (region-attribute alignment): configure_trainable(model)                    region + projector
  stage 2 (detailed description):       configure_trainable(model, lora=True)         + LoRA adapters
  global-only ablation:                 configure_trainable(model, train_region=False)  projector
  demo model from scratch:              configure_trainable(model, train_vision=True, train_lm=True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lora_mgimm import add_lora

if TYPE_CHECKING:
    import torch

    from .modeling_mgimm import MGIMMForConditionalGeneration


def configure_trainable(model: MGIMMForConditionalGeneration, train_region: bool = True,
                        train_projector: bool = True, lora: bool = False,
                        train_vision: bool = False, train_lm: bool = False) -> list[str]:
    """Set requires_grad on every parameter of an MGIMMForConditionalGeneration and return the names
    of the trainable ones. lora=True adds LoRA adapters first when the LM has none; adapters are
    frozen when lora=False. train_lm trains the LM's own (base) weights."""
    if lora and not model.config.use_lora:
        add_lora(model)
    model.config.freeze_vision = not train_vision
    for name, param in model.named_parameters():
        if name.startswith("vision_tower."):
            param.requires_grad = train_vision
        elif name.startswith("region_module."):
            param.requires_grad = train_region
        elif name.startswith("projector."):
            param.requires_grad = train_projector
        elif name.startswith("language_model."):
            param.requires_grad = lora if "lora_" in name else train_lm
        else:
            raise ValueError(f"parameter {name} belongs to no known part; update configure_trainable")
    return trainable_parameter_names(model)


def trainable_parameter_names(model: torch.nn.Module) -> list[str]:
    return [name for name, param in model.named_parameters() if param.requires_grad]
