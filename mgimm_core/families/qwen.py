"""Qwen2.5-VL and Qwen3-VL: transformers' own classes, the region as Qwen's grounding JSON.

Both read a region as `{"bbox_2d": [x1, y1, x2, y2]}` (../shared/reference.md section 8), in
different units: Qwen2.5-VL in absolute pixels of the image the model sees (sides multiples of patch
x merge = 28 px, within the folder's min/max pixels: `model_space`), Qwen3-VL in 0..1000 of the image
(its patches are 16 px, its sides multiples of 32). A region written in the other version's units
points elsewhere with the same confidence.

DescribeEarth (a Qwen2.5-VL-3B fine-tune) is a subclass in its own repository, with extra fusion
modules and a RemoteCLIP tower: its folder says `model_type` qwen2_5_vl but transformers' class would
drop those weights (extra tensors load silently), so it is recognised and refused with the reason
(`check_architecture`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgimm_core.errors import ModelError
from mgimm_core.families._folder import card_licence, image_processor_settings, named_licence
from mgimm_core.families._transformers import TransformersFamily
from mgimm_core.families.base import Licence
from mgimm_core.families.regions import ModelSpace

if TYPE_CHECKING:
    import torch
    from mgimm_core.load_options import LoadOptions
    from mgimm_core.model_formats import ModelKind

#: Image processor names stale Qwen folders carry (transformers 5 dropped the per-model classes and
#: then refuses the folder): the processor the folder's model_type maps to reads the same settings.
STALE_IMAGE_PROCESSORS = {"Qwen2_5_VLImageProcessor": "Qwen2VLImageProcessor"}

#: Merged visual tokens per chip side at the default chip size (16 x 16 = 256 tokens a chip).
TOKENS_PER_SIDE = 16

QWEN_RESEARCH = Licence("Qwen Research License", non_commercial=True,
                        note="Qwen2.5-VL-3B and its fine-tunes (DescribeEarth among them)")
QWEN_LICENCE = Licence("Qwen License (commercial use needs a licence above 100M monthly users)")
APACHE = Licence("Apache-2.0")


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's settings: nested (transformers 5) or at the top (older Hub folders)."""
    return config.get("text_config") or config


def licence_from_files(directory: Path) -> Licence | None:
    """The licence a folder's LICENSE file or model card (README.md front matter) names, if any."""
    for name in ("LICENSE", "LICENSE.txt", "LICENSE.md"):
        path = directory / name
        if path.is_file():
            head = path.read_text(errors="replace")[:400].lower()
            if "research license" in head:
                return QWEN_RESEARCH
            if "qwen license" in head:
                return QWEN_LICENCE
            if "apache license" in head:
                return APACHE
    card = (card_licence(directory) or "").lower()
    known = {"qwen-research": QWEN_RESEARCH, "qwen": QWEN_LICENCE, "apache-2.0": APACHE}
    if card in known or not card:
        return known.get(card)
    return named_licence(card, note="the model card's")


#: Qwen2.5-VL's released preprocessor_config.json pixel limits (what a server resizes with).
RELEASED_MIN_PIXELS, RELEASED_MAX_PIXELS = 3136, 12845056


class QwenVLFamily(TransformersFamily):
    """What the two Qwen versions share: processor, chat (the folder's template), JSON box."""

    #: architectures transformers' class runs as they are (others are subclasses with more modules)
    stock_architectures: tuple[str, ...] = ()

    # ------------------------------------------------------------------ facts
    def input_size(self, kind: ModelKind) -> int | None:
        """A square chip the processor passes through unresized: TOKENS_PER_SIDE merged patches a
        side, moved inside the folder's min/max pixels when they exclude it."""
        settings = image_processor_settings(kind.path)
        factor = int(settings.get("patch_size", self.patch_size)) * int(settings.get("merge_size", 2))
        size = settings.get("size") or {}
        low = settings.get("min_pixels") or size.get("shortest_edge") or factor * factor
        high = settings.get("max_pixels") or size.get("longest_edge") or 10 ** 9
        side = TOKENS_PER_SIDE * factor
        side = min(side, factor * math.floor(math.sqrt(high) / factor))
        return max(side, factor * math.ceil(math.sqrt(low) / factor))

    def architecture(self, kind: ModelKind) -> str | None:
        names = kind.config.get("architectures") or []
        return names[0] if names else None

    def source(self, kind: ModelKind) -> str:
        return self.architecture(kind) or self.name

    def check_architecture(self, kind: ModelKind) -> None:
        """Refuse folders of subclasses whose extra weights transformers' class would drop."""
        architecture = self.architecture(kind)
        if architecture is None or architecture in self.stock_architectures:
            return
        raise ModelError(f"{kind.path}: config.json names the architecture {architecture}, a subclass of "
                         f"{self.model_class} with modules of its own; transformers' class would drop their "
                         f"weights and answer as another model. Run it with its own code (mgimm-geo never runs "
                         f"remote code), or give a stock {self.title} folder (docs/models.md).")

    # ------------------------------------------------------------------ regions
    patch_size = 14
    #: model-info's words for the box's units
    units = ""

    def region_method(self, kind: ModelKind) -> str:
        if self.region_as != "text":
            return super().region_method(kind)
        return f'box text in the prompt ({self.convention}: {{"bbox_2d": [x1, y1, x2, y2]}} in {self.units})'

    def model_space(self, processor: Any, width: int, height: int) -> ModelSpace:
        """The image the model sees for a chip: the chip grown to whole merged patches
        (`whole_patches`), then transformers' own smart_resize with the folder's pixel limits (which
        leaves it as it is unless the limits say otherwise)."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        if processor is None:   # an endpoint's server resizes the chip itself, with the released defaults
            factor = self.patch_size * 2
            resized_height, resized_width = smart_resize(height, width, factor=factor, min_pixels=RELEASED_MIN_PIXELS,
                                                         max_pixels=RELEASED_MAX_PIXELS)
            return ModelSpace(resized_width, resized_height)
        images = processor.image_processor
        factor = images.patch_size * images.merge_size
        resized_height, resized_width = smart_resize(factor * math.ceil(height / factor),
                                                     factor * math.ceil(width / factor), factor=factor,
                                                     min_pixels=images.size["shortest_edge"],
                                                     max_pixels=images.size["longest_edge"])
        return ModelSpace(resized_width, resized_height)

    def whole_patches(self, processor: Any, image: Any) -> Any:
        """The chip (a PIL image) grown to the next multiple of patch x merge a side, with the
        processor's own filter. Qwen's processor rounds each side to the nearest multiple, so a
        61-px chip would reach the model as 56 px: detail lost, and a box in whole pixels of the
        model's image coarser than a chip pixel. Grown, it loses nothing, and a box written in
        the model's pixels comes back within half a chip pixel."""
        images = processor.image_processor
        factor = images.patch_size * images.merge_size
        size = (factor * math.ceil(image.width / factor), factor * math.ceil(image.height / factor))
        return image if size == image.size else image.resize(size, resample=images.resample)

    def model_inputs(self, processor: Any, images: list[Any], texts: list[str]) -> Any:
        return super().model_inputs(processor, [self.whole_patches(processor, image) for image in images], texts)

    # ------------------------------------------------------------------ loading
    def image_processor(self, directory: Path) -> Any:
        """The folder's image processor under the name transformers 5 knows, where the folder carries a
        stale one (STALE_IMAGE_PROCESSORS; transformers refuses the whole processor otherwise)."""
        settings = image_processor_settings(Path(directory))
        stale = settings.get("image_processor_type")
        if stale not in STALE_IMAGE_PROCESSORS:
            return None
        import transformers

        return transformers.AutoImageProcessor.from_pretrained(
            directory, processor_config={**settings, "image_processor_type": STALE_IMAGE_PROCESSORS[stale]})

    def load(self, kind: ModelKind, device: torch.device, options: LoadOptions) -> Any:
        self.check_architecture(kind)
        return super().load(kind, device, options)


class Qwen25VLFamily(QwenVLFamily):
    name = "qwen2.5-vl"
    title = "Qwen2.5-VL"
    model_class = "Qwen2_5_VLForConditionalGeneration"
    model_types = ("qwen2_5_vl",)
    served_id_patterns = ("*qwen2.5-vl*", "*qwen2_5_vl*", "*qwen2.5vl*", "*describeearth*")
    stock_architectures = ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLModel")
    convention = "qwen_pixels"
    patch_size = 14
    units = "pixels of the chip as the model sees it (grown to multiples of 28 px)"
    default_chip_size = TOKENS_PER_SIDE * 28
    weights_hint = ("a Qwen/Qwen2.5-VL-*-Instruct folder: `huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct "
                    "--local-dir DIR` on a connected machine, then copy DIR (safetensors, config, tokenizer, "
                    "preprocessor_config.json, chat template). DescribeEarth's folder does not load: it is a "
                    "subclass with its own fusion modules and RemoteCLIP tower (its repository's code); "
                    "Qwen2.5-VL-3B fine-tunes that keep the stock architecture do")

    def licence(self, kind: ModelKind) -> Licence:
        """The folder's LICENSE/card; else the size: 3B (hidden 2048) is Qwen Research (non-commercial),
        7B and 32B Apache-2.0, 72B the Qwen License. A fine-tune keeps its base's terms."""
        stated = licence_from_files(kind.path)
        if stated is not None:
            return stated
        hidden = _text_config(kind.config).get("hidden_size")
        by_width = {2048: QWEN_RESEARCH, 3584: APACHE, 5120: APACHE, 8192: QWEN_LICENCE}
        return by_width.get(hidden if isinstance(hidden, int) else 0,
                            Licence(note="not stated in the folder: see the model card"))


class Qwen3VLFamily(QwenVLFamily):
    name = "qwen3-vl"
    title = "Qwen3-VL"
    model_class = "Qwen3VLForConditionalGeneration"
    model_types = ("qwen3_vl",)
    served_id_patterns = ("*qwen3-vl*", "*qwen3_vl*", "*qwen3vl*")
    stock_architectures = ("Qwen3VLForConditionalGeneration", "Qwen3VLModel")
    convention = "qwen_1000"
    patch_size = 16
    units = "0..1000 of the chip's width and height"
    default_chip_size = TOKENS_PER_SIDE * 32
    default_licence = APACHE
    weights_hint = ("a Qwen/Qwen3-VL-*-Instruct folder (dense: 2B, 4B, 8B, 32B): `huggingface-cli download "
                    "Qwen/Qwen3-VL-8B-Instruct --local-dir DIR` on a connected machine, then copy DIR")

    def licence(self, kind: ModelKind) -> Licence:
        return licence_from_files(kind.path) or self.default_licence


FAMILIES = (Qwen25VLFamily(), Qwen3VLFamily())
