"""LLaVA-OneVision in transformers' own format (the llava-hf/llava-onevision-*-hf folders, model_type
"llava_onevision"): SigLIP at 384 px, anyres tiling, a Qwen2 language model.

Region: an outline drawn on the chip by default. OneVision has no grounding convention of its own
(its card and paper claim no region input). Its single-image stage did inherit LLaVA-1.5's region data
(the LLaVA-NeXT mix is LLaVA-1.5's mix plus additions, and that holds Visual Genome and RefCOCO boxes as
`[x1, y1, x2, y2]` in 0..1 with two decimals), a small share of its training, so the box text is offered
as an option (`unit_box`, the LLaVA-1.5 form), not as the default: a drawn outline needs no trained
convention. For square chips the 0..1 box is the same whether it was measured on the image or on
LLaVA-1.5's padded square.

Chip: one 384-px tile. The processor always feeds the whole image resized to the tile, plus a grid of
tiles at the best of its image_grid_pinpoints; a tile-sized chip is the base image undistorted and a
1 x 1 grid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from mgimm_core.families._folder import processor_tile
from mgimm_core.families._transformers import TransformersFamily
from mgimm_core.families.base import Licence

if TYPE_CHECKING:
    from mgimm_core.model_formats import ModelKind

#: SigLIP-so400m-patch14-384, OneVision's tower.
TILE = 384


class LlavaOnevisionFamily(TransformersFamily):
    name = "llava-onevision"
    title = "LLaVA-OneVision (Hugging Face -hf)"
    model_class = "LlavaOnevisionForConditionalGeneration"
    model_types = ("llava_onevision",)
    served_id_patterns = ("*llava-onevision*", "*llava_onevision*")
    convention = "unit_box"
    region_as = "outline"
    default_chip_size = TILE
    default_licence = Licence("Apache-2.0 (the 0.5B and 7B cards); the 72B follows Qwen2-72B's Qwen licence; "
                              "see the model card")
    weights_hint = ("a llava-hf/llava-onevision-qwen2-*-ov-hf (or -si-hf) folder (huggingface-cli download on a "
                    "connected machine, then copy the folder). The lmms-lab/llava-onevision-* originals are "
                    "LLaVA-NeXT code folders (model_type llava, LlavaQwenForCausalLM) and do not load: use the -hf "
                    "release.")

    def input_size(self, kind: ModelKind) -> int | None:
        """One tile: the image processor's `size` (else the vision tower's image_size)."""
        return processor_tile(kind.path) or super().input_size(kind)


FAMILY = LlavaOnevisionFamily()
