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
from mgimm_core.prompts import ATTRIBUTE_PROMPT, DESCRIPTION_PROMPT, GUIDANCE_LEAD
from mgimm_core import vocabulary

# The split of the tokenizers library's `Whitespace` pre-tokenizer, which the word tokenizer uses.
WORD_PATTERN = re.compile(r"\w+|[^\w\s]+")


ATTRIBUTE_GROUPS = (vocabulary.CLASS_NAMES, vocabulary.COLORS, vocabulary.SHAPES, vocabulary.SIZES,
                    vocabulary.ORIENTATIONS, vocabulary.POSITIONS)


def words_of(text: str) -> list[str]:
    """How the demo tokenizer splits text: lower-case words, numbers, runs of punctuation."""
    return WORD_PATTERN.findall(text.lower())


def demo_vocabulary(texts) -> list[str]:
    """Every word of the prompts, the attribute vocabulary and the given training texts, sorted."""
    words = set(words_of(ATTRIBUTE_PROMPT)) | set(words_of(DESCRIPTION_PROMPT)) | set(words_of(GUIDANCE_LEAD))
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


def demo_config(vocab_size: int, *, image_size: int = 128, vision_width: int = 192, vision_layers: int = 4,
                text_width: int = 256, text_layers: int = 4) -> MGIMMConfig:
    """The demo architecture (about 7 M parameters at the defaults)."""
    vision = dict(model_type="vit", hidden_size=vision_width, intermediate_size=4 * vision_width,
                  num_hidden_layers=vision_layers, num_attention_heads=vision_width // 64,
                  image_size=image_size, patch_size=16)
    text = dict(model_type="llama", hidden_size=text_width, intermediate_size=int(2.75 * text_width),
                num_hidden_layers=text_layers, num_attention_heads=text_width // 64,
                num_key_value_heads=text_width // 64, vocab_size=vocab_size, max_position_embeddings=512,
                pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
                initializer_range=0.02)
    return MGIMMConfig(
        vision_config=vision, text_config=text, image_size=image_size, vision_feature_layer=-1,
        freeze_vision=False, global_tokens=16, region_heads=vision_width // 64,
        region_mlp_dim=2 * vision_width, image_token_id=4, prompt_template="<image> {prompt} answer :",
        default_prompt=DESCRIPTION_PROMPT, **demo_region_settings())


def build_demo(texts, **config_overrides) -> tuple[MGIMMForConditionalGeneration, MGIMMProcessor]:
    """A freshly initialised demo model and its processor, vocabulary from `texts`."""
    tokenizer = build_word_tokenizer(demo_vocabulary(texts))
    config = demo_config(len(tokenizer), **config_overrides)
    model = MGIMMForConditionalGeneration(config)
    processor = MGIMMProcessor.from_config(config, tokenizer, word_detokenize=True, cased_words=cased_words(),
                                           guided_descriptions=True)
    return model, processor
