"""InternVL 2.5/3 in transformers' own format (the `*-hf` repositories, model_type "internvl"), and
InternVL's chat-code folders (model_type "internvl_chat": InternVL2, EarthDial), which are refused
with the way to convert them.

InternVL reads a region as `<ref>text</ref><box>[[x1, y1, x2, y2]]</box>`, the corners in 0..1000 of the
whole image (../shared/reference.md section 8). Its processor cuts an image into 448-px tiles (up to
12, plus a thumbnail when there are several) after resizing it to the grid nearest its aspect ratio;
a chip of one tile's size is one tile, undistorted, so that is the default chip. The 0..1000 box is
relative to the whole image, so tiling and resizing leave it as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mgimm_core.errors import ModelError
from mgimm_core.families._folder import processor_tile
from mgimm_core.families._transformers import TransformersFamily
from mgimm_core.families.base import Family, Licence
from mgimm_core.families.regions import ModelSpace

if TYPE_CHECKING:
    import torch

    from mgimm_core.load_options import LoadOptions
    from mgimm_core.model_formats import ModelKind

#: InternVL's tile side (InternViT-300M-448px / 6B-448px), when the folder does not say.
TILE = 448


class InternVLFamily(TransformersFamily):
    name = "internvl"
    title = "InternVL 2.5/3 (Hugging Face -hf)"
    model_class = "InternVLForConditionalGeneration"
    model_types = ("internvl",)
    served_id_patterns = ("*internvl*",)
    convention = "internvl_1000"
    default_chip_size = TILE
    default_licence = Licence("MIT (InternVL) over its language model's licence (Qwen2.5: Apache-2.0, "
                              "Qwen2.5-72B: Qwen licence; InternLM: its own terms); see the model card")
    weights_hint = ("an OpenGVLab/InternVL3-*-hf folder (huggingface-cli download on a connected machine, then "
                    "copy the folder); InternVL 2.5 in the same format where an -hf release exists, else converted "
                    "with transformers' convert_internvl_weights_to_hf.py. Chat-code folders (OpenGVLab/InternVL3-1B "
                    "without -hf, InternVL2, EarthDial) do not load as they are (model_type internvl_chat).")

    def input_size(self, kind: ModelKind) -> int | None:
        """One tile: the image processor's `size` (else the vision tower's image_size)."""
        tile = processor_tile(kind.path)
        if tile:
            return tile
        size = (kind.config.get("vision_config") or {}).get("image_size")
        if isinstance(size, list) and len(size) == 2 and size[0] == size[1]:
            size = size[0]
        return size if isinstance(size, int) and size > 0 else self.default_chip_size

    def model_space(self, processor: Any, width: int, height: int) -> ModelSpace:
        """The tiled canvas the processor resizes a chip to (one tile for a chip of the tile's size)."""
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

        image_processor = processor.image_processor
        size = image_processor.size
        tile_h, tile_w = (size["height"], size["width"]) if isinstance(size, dict) else (size.height, size.width)
        columns, rows = get_optimal_tiled_canvas((height, width), (tile_h, tile_w),
                                                 image_processor.min_patches, image_processor.max_patches)
        return ModelSpace(columns * tile_w, rows * tile_h)

    def region_phrase(self, region_as: str, region_text: str | None) -> str:
        """InternVL names a region by a referring phrase and its box: the <ref>region</ref><box>[[...]]</box>."""
        if region_as == "text":
            return f"the <ref>region</ref>{region_text}"
        return super().region_phrase(region_as, region_text)


class InternVLChatFamily(Family):
    """InternVL's own chat-code folders: recognised, so the user learns how to convert them."""

    name = "internvl-chat"
    title = "InternVL chat code (InternVL2, EarthDial: refused, convert to -hf)"
    order = 45
    convention = "internvl_1000"
    weights_hint = ("not loadable as is: InternVLChatModel runs only as the folder's own Python code, which "
                    "mgimm-geo never runs. InternVL 2.5/3 folders: use the -hf release or convert with "
                    "transformers' models/internvl/convert_internvl_weights_to_hf.py (Qwen2 and InternLM2 "
                    "language models). EarthDial (InternVL2 with Phi-3-mini) has no -hf release and the "
                    "converter does not map Phi-3, so it does not load.")

    def recognise(self, config: dict[str, Any], directory: Path) -> bool:
        return config.get("model_type") == "internvl_chat"

    def refuse(self, kind: ModelKind) -> ModelError:
        llm = (kind.config.get("llm_config") or {}).get("architectures") or ["?"]
        return ModelError(
            f"{kind.path}: config.json has model_type 'internvl_chat' (InternVL's chat code, language model "
            f"{llm[0]}), which transformers cannot load without running the folder's own code, and mgimm-geo "
            f"never runs remote code. Use the model's -hf release (e.g. OpenGVLab/InternVL3-2B-hf), or convert "
            f"it where you trust the code with transformers' convert_internvl_weights_to_hf.py "
            f"(InternVL 2.5/3 with Qwen2 or InternLM2 language models; EarthDial's Phi-3 is not covered).")

    def input_size(self, kind: ModelKind) -> NoReturn:
        raise self.refuse(kind)

    def chip_settings(self, kind: ModelKind) -> NoReturn:
        raise self.refuse(kind)

    def load(self, kind: ModelKind, device: torch.device, options: LoadOptions) -> NoReturn:
        raise self.refuse(kind)


FAMILIES = (InternVLFamily(), InternVLChatFamily())
