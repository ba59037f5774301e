"""Families that transformers runs natively (Qwen-VL, InternVL, Florence-2, SmolVLM, ...): the
folder loads into transformers' own class (no remote code) and `mgimm_core.model.vlm_describer`
asks it the two questions, the region written in the family's convention, drawn, or cropped.

A family module subclasses `TransformersFamily` and states its class, its `model_type`s, its
convention and where it differs (the model space its boxes are measured in, its chat, its answer).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgimm_core.answers import ATTRIBUTE_FIELDS
from mgimm_core.families._folder import card_licence
from mgimm_core.families.base import Family, Licence
from mgimm_core.families.marks import OUTLINE_NAME
from mgimm_core.families.regions import BoxLike, ModelSpace
from mgimm_core.model_formats import read_json

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mgimm_core.load_options import LoadOptions
    from mgimm_core.model_formats import ModelKind


class TransformersFamily(Family):
    """A family whose folders load with a transformers class (`model_class`)."""

    model_class: str = ""
    model_types: tuple[str, ...] = ()
    order = 40
    #: the attribute question asks for the row schema as JSON (decoded under a JSON constraint locally)
    json_attributes = True
    #: an encoder-decoder (Florence-2): right padding, answers start at the decoder's first token
    encoder_decoder = False
    #: the processor resizes every image to a square: `crop` sends a square crop (marks.crop), not a stretched one
    square_crop = False

    def recognise(self, config: dict[str, Any], directory: Path) -> bool:
        return config.get("model_type") in self.model_types

    def prompt_template(self, kind: ModelKind) -> str:
        return "the folder's own chat template (chat_template.jinja / tokenizer_config.json)"

    def licence(self, kind: ModelKind) -> Licence:
        """The licence the folder's model card (README.md) states, else the family's."""
        stated = card_licence(kind.path)
        return Licence(stated, note="from the folder's model card") if stated else self.default_licence

    # ------------------------------------------------------------------ regions
    def model_space(self, processor: Any, width: int, height: int) -> ModelSpace:
        """The image the model sees for a `width` x `height` chip (its processor's resize)."""
        return ModelSpace(width, height)

    def region_text(self, processor: Any, box: BoxLike, width: int, height: int) -> str:
        """The region (box in chip pixels) written in the family's convention."""
        convention = self.region_convention()
        assert convention is not None, f"{self.name} has no text convention"
        # relative conventions need no model space (and an endpoint has no processor to tell it)
        space = self.model_space(processor, width, height) if convention.scale is None else None
        return convention.write(box, width, height, space)

    def region_view(self, processor: Any, region_as: str, chip: np.ndarray, box: BoxLike,
                    mask: np.ndarray | None) -> tuple[Any, str]:
        """(the image the model is shown, how the questions name the region) for a region (box and
        mask in chip pixels): outlined, cropped, or written as text in the family's convention.
        processor None: no local processor (an endpoint), model_space gets None too."""
        from mgimm_core.families import marks

        if region_as == "outline":
            return marks.outline(chip, box, mask), self.region_phrase("outline", None)
        if region_as == "crop":
            return marks.crop(chip, box, square=self.square_crop), self.region_phrase("crop", None)
        h, w = chip.shape[:2]
        return chip, self.region_phrase("text", self.region_text(processor, box, w, h))

    def region_phrase(self, region_as: str, region_text: str | None) -> str:
        """How the questions name the region."""
        if region_as == "outline":
            return f"the region outlined in {OUTLINE_NAME}"
        if region_as == "crop":
            return "this image"
        return f"the region {region_text}"

    # ------------------------------------------------------------------ questions
    def attribute_question(self, region: str) -> str:
        return (f"What is the main object in {region} of this remote sensing image? Answer with a JSON object "
                f"with the keys {', '.join(ATTRIBUTE_FIELDS)} (each a short phrase; object \"none\" when "
                f"no object stands out).")

    def description_question(self, region: str, prompt: str | None) -> str:
        if prompt:
            return prompt.replace("{region}", region) if "{region}" in prompt else f"{prompt} ({region})"
        return (f"Describe {region} of this remote sensing image in detail: the land cover and the "
                f"attributes, counts and positions of the objects.")

    def recorded_prompt(self, prompt: str | None) -> str:
        return self.description_question(self.region_phrase("text", "{region}"), prompt)

    def chat_text(self, processor: Any, question: str) -> str:
        """The question in the folder's chat template, with one image, ready for generation."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text: str = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text

    def model_inputs(self, processor: Any, images: list[Any], texts: list[str]) -> Any:
        """The processor's tensors for a batch of (image, text) pairs, left-padded."""
        return processor(images=images, text=texts, return_tensors="pt", padding=True)

    def answer_ids(self, generated: Any, inputs: Any) -> Any:
        """The answer's tokens of `generate`'s output (decoder-only models repeat the prompt)."""
        return generated[:, inputs["input_ids"].shape[1]:]

    def parse_attributes(self, text: str) -> dict[str, Any]:
        """Attributes of a non-JSON answer (families with json_attributes False)."""
        return {"name": text.strip()} if text.strip() else {}

    def answer_text(self, processor: Any, ids: list[int]) -> str:
        text: str = processor.decode(ids, skip_special_tokens=True).strip()
        return text

    # ------------------------------------------------------------------ loading
    def image_processor(self, directory: Path) -> Any:
        """An image processor the family builds itself for `load_processor`, or None: the folder's own."""
        return None

    def load_processor(self, directory: Path) -> Any:
        """The folder's processor (transformers' AutoProcessor; never remote code). Where torchvision is
        missing (CPU installs of torch), transformers cannot build the video processor that InternVL's,
        LLaVA-OneVision's and Qwen-VL's processors hold and refuses the whole processor; chips are images,
        so the folder's processor class is then built from its tokenizer and image processor alone."""
        import transformers
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
        from transformers.utils.import_utils import is_torchvision_available

        images = self.image_processor(directory)
        loaded = {} if images is None else {"image_processor": images}

        if not is_torchvision_available():
            name = PROCESSOR_MAPPING_NAMES.get(str(read_json(directory / "config.json").get("model_type")))
            processor_class = getattr(transformers, name, None) if isinstance(name, str) else None
            if processor_class is not None and "video_processor" in processor_class.get_attributes():
                images_only = [a for a in processor_class.get_attributes() if a != "video_processor"]
                without_video: Any = type(processor_class.__name__, (processor_class,),
                                          {"get_attributes": classmethod(lambda cls: list(images_only))})
                return without_video.from_pretrained(directory, trust_remote_code=False, **loaded)
        auto: Any = transformers.AutoProcessor     # its from_pretrained is untyped
        return auto.from_pretrained(directory, trust_remote_code=False, **loaded)

    def load(self, kind: ModelKind, device: torch.device, options: LoadOptions) -> Any:
        from mgimm_core.model.vlm_describer import VLMDescriber

        return VLMDescriber.load(self, kind, device, options)
