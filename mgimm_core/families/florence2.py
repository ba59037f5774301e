"""Florence-2 (`Florence2ForConditionalGeneration`, native in transformers 5): an encoder-decoder
(DaViT vision tower + BART) driven by task prompts, not a chat model.

A region is written after a task token as four location tokens `<loc_x1><loc_y1><loc_x2><loc_y2>`:
1000 bins per side of the image, floor binning (regions.CONVENTIONS["florence_bins"], the same
integers as the processor's own `Florence2PostProcessor.quantize`). The processor expands the task
token into the sentence the model was trained on (`<REGION_TO_CATEGORY>` -> "What is the region
<loc_..>...?") and adds the image tokens. The attribute question is `<REGION_TO_CATEGORY>`: its
free-text category, in the model's words, becomes the `object` attribute; the description is
`<REGION_TO_DESCRIPTION>`.

Folders in Microsoft's original remote-code format (microsoft/Florence-2-*, and the Falcon
remote-sensing fine-tune) carry model_type "florence2" too, with an `auto_map` to their own code:
they are recognised so that loading names the conversion instead of failing on an unknown type.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgimm_core.errors import InvalidAnswerError, ModelError
from mgimm_core.families._folder import card_licence, image_processor_settings, named_licence
from mgimm_core.families._transformers import TransformersFamily
from mgimm_core.families.base import Licence
from mgimm_core.families.regions import ModelSpace

if TYPE_CHECKING:
    import torch
    from mgimm_core.load_options import LoadOptions
    from mgimm_core.model_formats import ModelKind

#: The processor's input side of every Florence-2 release (its preprocessor's `size`, 768 x 768).
FLORENCE_INPUT = 768
#: The region as the whole image (a chip cropped to its region): the first and last bins.
WHOLE_IMAGE = "<loc_0><loc_0><loc_999><loc_999>"
#: Florence-2's task prompts for a region.
CATEGORY_TASK = "<REGION_TO_CATEGORY>"
DESCRIPTION_TASK = "<REGION_TO_DESCRIPTION>"
_TASK_TOKEN = re.compile(r"^<[A-Z_]+>$")
#: Florence-2's tasks about the whole image (no region input: its processor refuses one after them).
WHOLE_IMAGE_TASKS = ("<OCR>", "<OCR_WITH_REGION>", "<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OD>",
                     "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>")
MIT = Licence("MIT")


def _remote_code(config: dict[str, Any]) -> bool:
    """Microsoft's original layout: its own code (`auto_map`) and a DaViT/florence2_language config."""
    vision = (config.get("vision_config") or {}).get("model_type")
    text = (config.get("text_config") or {}).get("model_type")
    return "auto_map" in config or vision == "davit" or text == "florence2_language"


def _processor_size(directory: Path) -> tuple[int, int] | None:
    """(width, height) the image processor resizes to (its `size`), else None."""
    size = image_processor_settings(directory).get("size")
    width, height = (size.get("width"), size.get("height")) if isinstance(size, dict) else (None, None)
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        return width, height
    return None


class Florence2Family(TransformersFamily):
    name = "florence2"
    title = "Florence-2"
    model_class = "Florence2ForConditionalGeneration"
    model_types = ("florence2",)
    served_id_patterns: tuple[str, ...] = ("*florence-2*", "*florence2*")
    convention = "florence_bins"
    default_chip_size = FLORENCE_INPUT
    default_licence = MIT
    weights_hint = ("florence-community/Florence-2-{base,large}[-ft] (transformers' native format; "
                    "huggingface-cli download on a connected machine, then copy the folder). "
                    "microsoft/Florence-2-* (the same weights) and Falcon (TianHuiLab/Falcon-*) ship their own code "
                    "and do not load natively: model-info recognises them and loading names the conversion")
    json_attributes = False
    encoder_decoder = True

    def recognise(self, config: dict[str, Any], directory: Path) -> bool:
        return config.get("model_type") in self.model_types and not _remote_code(config)

    def region_ways(self) -> tuple[str, ...]:
        """Location tokens, or the chip cropped to the region; Florence-2 was not trained on drawn outlines."""
        return ("text", "crop")

    def input_size(self, kind: ModelKind) -> int | None:
        """The processor's square input (768 in every release): chips of that side are not resized."""
        size = _processor_size(kind.path)
        return max(size) if size else self.default_chip_size

    def licence(self, kind: ModelKind) -> Licence:
        """MIT (Florence-2 and Falcon); a fine-tune's card (README.md `license:`) may say otherwise."""
        card = card_licence(kind.path)
        if card is None or card.lower() == "mit":
            return self.default_licence
        return named_licence(card, note="from the folder's README.md")

    def prompt_template(self, kind: ModelKind) -> str:
        return f"task prompts {CATEGORY_TASK}{{region}} and {DESCRIPTION_TASK}{{region}}, expanded by its processor"

    # ------------------------------------------------------------------ regions
    def model_space(self, processor: Any, width: int, height: int) -> ModelSpace:
        """Every chip is resized to the processor's fixed size; the bins are relative to each side."""
        size = getattr(getattr(processor, "image_processor", None), "size", None) or {}
        return ModelSpace(int(size.get("width", FLORENCE_INPUT)), int(size.get("height", FLORENCE_INPUT)))

    def region_phrase(self, region_as: str, region_text: str | None) -> str:
        """The location tokens alone (a task token precedes them); a crop is the whole image."""
        return region_text if region_as == "text" and region_text else WHOLE_IMAGE

    # ------------------------------------------------------------------ questions
    def attribute_question(self, region: str) -> str:
        return CATEGORY_TASK + region

    def description_question(self, region: str, prompt: str | None) -> str:
        """`<REGION_TO_DESCRIPTION>` unless the user's prompt says otherwise: `{region}` in it becomes the
        location tokens; a whole-image task (`<MORE_DETAILED_CAPTION>`, e.g. with --region-as crop) stays
        alone; another task token gets them as its input; other text gets them appended."""
        if not prompt:
            return DESCRIPTION_TASK + region
        if "{region}" in prompt:
            return prompt.replace("{region}", region)
        task = prompt.strip()
        if task in WHOLE_IMAGE_TASKS:
            return task
        return task + region if _TASK_TOKEN.match(task) else f"{prompt} {region}"

    def chat_text(self, processor: Any, question: str) -> str:
        """The task prompt as is: the processor expands it and adds the image tokens, <s> and </s>."""
        return question

    def answer_ids(self, generated: Any, inputs: Any) -> Any:
        """generate returns the decoder's tokens only, from its start token on."""
        return generated[:, 1:]

    def parse_attributes(self, text: str) -> dict[str, Any]:
        """The category answer, in the model's words, is the object; an empty one is an invalid answer."""
        name = text.strip()
        if not name:
            raise InvalidAnswerError("Florence-2 gave an empty <REGION_TO_CATEGORY> answer")
        return {"name": name}


class Florence2RemoteCodeFamily(Florence2Family):
    """microsoft/Florence-2-* and Falcon folders: recognised, never run (they need their own code)."""

    name = "florence2-remote-code"
    served_id_patterns = ()        # a server has converted it: it is served as florence2
    title = "Florence-2 (original remote-code format, e.g. microsoft/Florence-2-*, Falcon)"
    order = 39

    def recognise(self, config: dict[str, Any], directory: Path) -> bool:
        return config.get("model_type") in self.model_types and _remote_code(config)

    def load(self, kind: ModelKind, device: torch.device, options: LoadOptions) -> Any:
        raise ModelError(
            f"{kind.path}: this Florence-2 folder needs its own code (config.json auto_map), which mgimm-geo never "
            f"runs. Use florence-community/Florence-2-* (the same weights in transformers' native format), or convert "
            f"the folder with convert_florence2_original_pytorch_to_hf.py from transformers' source repository "
            f"(models/florence2). Falcon (pytorch_model.bin) is prompted with instructions holding "
            f"<box><x1><y1><x2><y2></box> in 0..1000, not Florence-2's task tokens: a converted Falcon folder would "
            f"need its own family.")


FAMILIES = (Florence2Family(), Florence2RemoteCodeFamily())
