"""Tiny random Qwen2.5-VL and Qwen3-VL folders in the layout of the Hub's Qwen/Qwen*-VL-*-Instruct.

For tests and benchmarks: no downloads. Each writer saves the model with `save_pretrained`
(safetensors, config.json, generation_config.json), a small byte-level BPE tokenizer with Qwen's
special tokens as `Qwen2Tokenizer` saves it, and the processor files as the Hub folders hold them:
`preprocessor_config.json` (Qwen2.5-VL's with its stale `Qwen2_5_VLImageProcessor` name and
min/max pixels; Qwen3-VL's with its `size`, 16-px patches and 0.5 mean/std) and `chat_template.json`.
Every writer returns the transformers model holding the same weights, the yardstick.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .testing_folders import randomise_, write_json
from .testing_mgimm import TINY_WORDS

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Qwen's special tokens, in the Hub tokenizers' order after <|endoftext|>.
QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
                 "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Qwen's chat format (system, user turns with <|vision_start|><|image_pad|><|vision_end|> per image,
# generation prompt); Qwen2.5-VL adds a default system message, Qwen3-VL none.
_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' and DEFAULT_SYSTEM %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QWEN25_CHAT_TEMPLATE = _TEMPLATE.replace("DEFAULT_SYSTEM", "true")
QWEN3_CHAT_TEMPLATE = _TEMPLATE.replace("DEFAULT_SYSTEM", "false")

_CORPUS = [" ".join(TINY_WORDS), "describe the region of this remote sensing image in detail",
           "what is the main object in the region answer with a json object with the keys",
           '{"object": "car", "color": "red", "shape": "square", "size": "small", "orientation": "none"}',
           '{"bbox_2d": [0, 1, 2, 3]}', "You are a helpful assistant.", "system user assistant",
           "land cover attributes counts positions objects short phrase no object stands out"]


def qwen_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer with Qwen's pre-tokenizer and special tokens, as Qwen2Tokenizer."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    trainer_model = Tokenizer(models.BPE())
    trainer_model.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer_model.train_from_iterator(_CORPUS, trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]))
    spec = json.loads(trainer_model.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in spec["merges"]]
    # transformers annotates merges as "a b" strings; tokenizers' BPE, which gets them, takes the pairs
    return Qwen2Tokenizer(vocab=spec["vocab"], merges=merges,  # type: ignore[arg-type]
                          eos_token="<|im_end|>", pad_token="<|endoftext|>", additional_special_tokens=QWEN_SPECIALS)


def token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    names = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
             "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}
    return {key: tokenizer.convert_tokens_to_ids(token) for key, token in names.items()}


def _randomise(model: PreTrainedModel, seed: int) -> PreTrainedModel:
    """Every tensor informative (the default init leaves some at zero or one), fixed by `seed`."""
    torch.manual_seed(seed)
    randomised: PreTrainedModel = randomise_(model).eval()
    return randomised


def _text_settings(tokenizer: PreTrainedTokenizerBase, width: int, head_dim: int) -> dict[str, Any]:
    """The LM's settings; its vocabulary padded past the tokenizer to a multiple of 64, as the released
    models' are (151936 rows for 151665 tokens)."""
    return dict(vocab_size=64 * -(-len(tokenizer) // 64), hidden_size=width, intermediate_size=2 * width,
                num_hidden_layers=2, num_attention_heads=width // head_dim, num_key_value_heads=1,
                max_position_embeddings=4096, tie_word_embeddings=False, bos_token_id=None,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def tiny_qwen25_vl(tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> PreTrainedModel:
    """A random Qwen2_5_VLForConditionalGeneration (fp32, eval): 2 vision blocks (windowed, then full
    attention), 2 LM layers of width 32, head 16, M-RoPE sections 2/3/3."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = _text_settings(tokenizer, 32, 16)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1]),
        # the generated signature lists no **kwargs, but PreTrainedConfig keeps extra settings (config.json has them)
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,  # type: ignore[call-arg]
        **token_ids(tokenizer))
    return _randomise(Qwen2_5_VLForConditionalGeneration(config), seed)


def tiny_qwen3_vl(tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> PreTrainedModel:
    """A random Qwen3VLForConditionalGeneration (fp32, eval): 2 vision blocks with 16-px patches, a
    16 x 16 position table (interpolated to each image's grid) and one deepstack layer; 2 LM layers of
    width 32, head 16, interleaved M-RoPE sections 4/2/2."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    text = _text_settings(tokenizer, 32, 16)
    text.update(head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                              "mrope_section": [4, 2, 2], "mrope_interleaved": True})
    config = Qwen3VLConfig(
        text_config=text, vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=16,
            spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=256, deepstack_visual_indexes=[0]),
        **token_ids(tokenizer))
    return _randomise(Qwen3VLForConditionalGeneration(config), seed)


QWEN25_PREPROCESSOR = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                       "merge_size": 2, "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "resample": 3,
                       "image_processor_type": "Qwen2_5_VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"}
QWEN3_PREPROCESSOR = {"size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16,
                      "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                      "image_std": [0.5, 0.5, 0.5], "processor_class": "Qwen3VLProcessor",
                      "image_processor_type": "Qwen2VLImageProcessorFast"}
QWEN3_VIDEO_PREPROCESSOR = {"size": {"longest_edge": 25165824, "shortest_edge": 4096}, "patch_size": 16,
                            "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                            "image_std": [0.5, 0.5, 0.5], "processor_class": "Qwen3VLProcessor",
                            "video_processor_type": "Qwen3VLVideoProcessor"}


#: Per family (mgimm_core/families/qwen.py): preprocessor_config.json, chat template, video_preprocessor_config.json.
QWEN_FILES = {"qwen2.5-vl": (QWEN25_PREPROCESSOR, QWEN25_CHAT_TEMPLATE, None),
              "qwen3-vl": (QWEN3_PREPROCESSOR, QWEN3_CHAT_TEMPLATE, QWEN3_VIDEO_PREPROCESSOR)}


def write_processor_files(directory: str | Path, family: str, tokenizer: PreTrainedTokenizerBase,
                          **preprocessor: Any) -> None:
    """The tokenizer and processor files of a `family` (a key of QWEN_FILES) folder, as the Hub's."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    settings, template, video = QWEN_FILES[family]
    write_json(directory / "preprocessor_config.json", {**settings, **preprocessor})
    write_json(directory / "chat_template.json", {"chat_template": template})
    if video is not None:
        write_json(directory / "video_preprocessor_config.json", video)


#: Per family: the tiny model of its shapes.
TINY_MODELS = {"qwen2.5-vl": tiny_qwen25_vl, "qwen3-vl": tiny_qwen3_vl}


def write_qwen_vl(directory: str | Path, family: str, seed: int = 0,
                  **preprocessor: Any) -> tuple[Path, PreTrainedModel]:
    """A `family` (a key of QWEN_FILES) folder: the tiny model's weights and the processor files;
    `preprocessor` overrides preprocessor_config.json's values. Returns (directory, reference model)."""
    directory = Path(directory)
    tokenizer = qwen_tokenizer()
    model = TINY_MODELS[family](tokenizer, seed)
    model.save_pretrained(str(directory))
    write_processor_files(directory, family, tokenizer, **preprocessor)
    return directory, model


def write_qwen25_vl(directory: str | Path, seed: int = 0, **preprocessor: Any) -> tuple[Path, PreTrainedModel]:
    """A Qwen2.5-VL folder (`write_qwen_vl`)."""
    return write_qwen_vl(directory, "qwen2.5-vl", seed, **preprocessor)


def write_qwen3_vl(directory: str | Path, seed: int = 0, **preprocessor: Any) -> tuple[Path, PreTrainedModel]:
    """A Qwen3-VL folder, with its video_preprocessor_config.json as the Hub's (`write_qwen_vl`)."""
    return write_qwen_vl(directory, "qwen3-vl", seed, **preprocessor)
