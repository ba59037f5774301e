"""SmolVLM (model_type `smolvlm`: HuggingFaceTB/SmolVLM2-*) and Idefics3 (model_type `idefics3`:
HuggingFaceM4/Idefics3-8B-Llama3 and SmolVLM v1, HuggingFaceTB/SmolVLM-*-Instruct).

Neither was trained with a grounding convention (../shared/reference.md section 8), so a region
reaches the model as its polygon's outline drawn on the chip (default) or as the chip cropped to it.

Image splitting: the processors first resize an image so its longest edge is `size.longest_edge`
(4x the tile side in the real folders), then cut it into `max_image_size` tiles plus the whole image
shrunk to one tile: a 512 px chip would become 16 tiles + 1 (1,088 image tokens on SmolVLM2-256M).
A chip is one tile here: the chip side is the folder's `max_image_size.longest_edge` (the vision
tower's `image_size`), and the processor is called with `do_image_splitting=False`, which resizes the
chip to exactly that square (LANCZOS): one image of `image_seq_len` tokens, the chip undistorted.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgimm_core.families._folder import card_licence, image_processor_settings
from mgimm_core.families._transformers import TransformersFamily
from mgimm_core.families.base import Licence
from mgimm_core.families.regions import ModelSpace

if TYPE_CHECKING:
    from mgimm_core.model_formats import ModelKind


def _tile_side(directory: Path) -> int | None:
    """The image processor's `max_image_size.longest_edge`, else None."""
    side = (image_processor_settings(directory).get("max_image_size") or {}).get("longest_edge")
    return side if isinstance(side, int) and side > 0 else None


class SmolVLMFamily(TransformersFamily):
    name = "smolvlm"
    title = "SmolVLM2"
    model_class = "SmolVLMForConditionalGeneration"
    model_types = ("smolvlm",)
    served_id_patterns: tuple[str, ...] = ("*smolvlm2*",)
    convention = None
    region_as = "outline"
    square_crop = True          # do_image_splitting=False resizes any image to the square tile
    default_licence = Licence("Apache-2.0")
    weights_hint = ("a HuggingFaceTB/SmolVLM2-*-Instruct folder (huggingface-cli download on a connected machine, "
                    "then copy); the safetensors, config, tokenizer and processor files are all it needs")

    def input_size(self, kind: ModelKind) -> int | None:
        """One tile: max_image_size.longest_edge (the vision tower's image_size when not stated)."""
        return _tile_side(kind.path) or super().input_size(kind)

    def load_processor(self, directory: Path) -> Any:
        """Idefics3's processor over the folder's own image processor, tokenizer, image_seq_len and chat
        template: for images it writes exactly SmolVLMProcessor's prompt (the same
        <fake_token_around_image><global-img><image>... strings, transformers' processing_smolvlm.py),
        without SmolVLMProcessor's video processor, which needs torchvision."""
        from transformers import Idefics3Processor

        return Idefics3Processor.from_pretrained(directory, trust_remote_code=False)

    def model_space(self, processor: Any, width: int, height: int) -> ModelSpace:
        """The tile the model sees: the chip resized to max_image_size's square (no splitting)."""
        side = int(processor.image_processor.max_image_size["longest_edge"])
        return ModelSpace(side, side)

    def model_inputs(self, processor: Any, images: list[Any], texts: list[str]) -> Any:
        """One image per text, not split into tiles (see the module's docstring)."""
        return processor(images=[[image] for image in images], text=texts, return_tensors="pt", padding=True,
                         do_image_splitting=False)


class Idefics3Family(SmolVLMFamily):
    name = "idefics3"
    title = "Idefics3 / SmolVLM (v1)"
    model_class = "Idefics3ForConditionalGeneration"
    model_types = ("idefics3",)
    served_id_patterns = ("*idefics3*", "*smolvlm-*")
    weights_hint = ("a HuggingFaceTB/SmolVLM-*-Instruct or HuggingFaceM4/Idefics3-8B-Llama3 folder "
                    "(huggingface-cli download on a connected machine, then copy)")

    def licence(self, kind: ModelKind) -> Licence:
        """Apache-2.0 (both cards); Idefics3-8B-Llama3's text model is Llama 3.1 (a 128k vocabulary),
        whose licence applies as well."""
        stated = card_licence(kind.path) or "Apache-2.0"
        vocabulary = (kind.config.get("text_config") or {}).get("vocab_size") or 0
        if vocabulary >= 128_000:
            return Licence(stated, note="the text model is Llama 3.1: the Llama 3.1 Community Licence applies too")
        return Licence(stated)


FAMILIES = (SmolVLMFamily(), Idefics3Family())
