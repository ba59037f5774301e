"""Which parameters train: explicit flags instead of a stage string.

Reference recipes (docs/training.md), as flags:
  stage 1 (region-attribute alignment): configure_trainable(model)                    region + projector
  stage 2 (detailed description):       configure_trainable(model, lora=True)         + LoRA adapters
  global-only ablation:                 configure_trainable(model, train_region=False)  projector
  demo model from scratch:              configure_trainable(model, train_vision=True, train_lm=True)
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .lora_mgimm import add_lora

if TYPE_CHECKING:
    import torch

    from .configuration_mgimm import MGIMMConfig
    from .modeling_mgimm import MGIMMForConditionalGeneration


def configure_trainable(model: MGIMMForConditionalGeneration, train_region: bool = True,
                        train_projector: bool = True, lora: bool = False,
                        train_vision: bool = False, train_lm: bool = False,
                        vision_blocks: int | None = None) -> list[str]:
    """Set requires_grad on every parameter of an MGIMMForConditionalGeneration and return the names
    of the trainable ones. lora=True adds LoRA adapters first when the LM has none; adapters are
    frozen when lora=False. train_lm trains the LM's own (base) weights. vision_blocks: with
    train_vision, only the n blocks ending at the one whose output the model reads
    (`vision_feature_layer`) train: a pretrained tower adapted near its output, its early layers
    kept; None trains all of it."""
    if lora and not model.config.use_lora:
        add_lora(model)
    trained_blocks = range(0)
    if train_vision and vision_blocks is not None:
        trained_blocks = _read_blocks(model.config, vision_blocks)
    model.config.freeze_vision = not train_vision
    for name, param in model.named_parameters():
        if name.startswith("vision_tower."):
            param.requires_grad = train_vision and (vision_blocks is None or _vision_block(name) in trained_blocks)
        elif name.startswith("region_module."):
            param.requires_grad = train_region
        elif name.startswith("projector."):
            param.requires_grad = train_projector
        elif name.startswith("language_model."):
            param.requires_grad = lora if "lora_" in name else train_lm
        else:
            raise ValueError(f"parameter {name} belongs to no known part; update configure_trainable")
    return trainable_parameter_names(model)


def _read_blocks(config: MGIMMConfig, n: int) -> range:
    """The last `n` encoder blocks whose output reaches the model's features: hidden state k is the
    output of block k - 1 (state 0 is the embeddings), and `vision_feature_layer` picks the state."""
    total = config.vision.num_hidden_layers
    layer = config.vision_feature_layer
    last = (total + layer if layer < 0 else layer - 1)   # the block whose output is read
    if not 1 <= n <= last + 1:
        raise ValueError(f"vision_blocks={n}: the model reads the output of block {last} of its tower "
                         f"(vision_feature_layer {layer}), so give 1 to {last + 1} blocks")
    return range(last - n + 1, last + 1)


def _vision_block(name: str) -> int:
    """The encoder block a vision-tower parameter belongs to (`encoder.layer.3.` in ViT and DINOv2,
    `encoder.layers.3.` in CLIP and SigLIP); -1 for embeddings, and for norms after the last
    block, which only a fully trained tower trains."""
    found = re.search(r"\.layers?\.(\d+)\.", name)
    return int(found.group(1)) if found else -1


def trainable_parameter_names(model: torch.nn.Module) -> list[str]:
    return [name for name, param in model.named_parameters() if param.requires_grad]
