"""Tiny random InternVL 2.5/3 checkpoints in the `*-hf` on-disk format, for tests and benchmarks (no downloads).

`write_internvl` writes what OpenGVLab/InternVL3-*-hf folders hold: config.json and model.safetensors
(save_pretrained of InternVLForConditionalGeneration), a Qwen2 byte-level BPE tokenizer with InternVL's
added tokens (<img>, </img>, <IMG_CONTEXT>, <ref>, <box>, ...) named in tokenizer_config.json,
preprocessor_config.json (GotOcr2 image processor, 448-px tiles there, `tile` px here),
processor_config.json and chat_template.jinja in the -hf template (no system prompt, the image as
<IMG_CONTEXT>). It returns the model too, the yardstick a loaded folder is compared against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from .testing_folders import write_json

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

#: Text the tiny BPE is trained on: the questions the describer asks, so prompts stay short.
BPE_CORPUS = [
    "What is the main object in the region of this remote sensing image? Answer with a JSON object with the keys "
    "object, color, shape, size, orientation (each a short phrase; object \"none\" when no object stands out).",
    "Describe the region of this remote sensing image in detail: the land cover and the attributes, counts and "
    "positions of the objects. Outlined in red. this image",
    '{"object": "car", "color": "red", "shape": "rectangular", "size": "small", "orientation": "north"}',
    "0 1 2 3 4 5 6 7 8 9 [[ ]] , . none building road field water tree",
]
#: Qwen2's own special tokens.
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
#: What InternVL's -hf tokenizers add (transformers' models/internvl/convert_internvl_weights_to_hf.py lists them).
INTERNVL_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>",
                   "<video>"]
INTERNVL_NAMED = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                  "video_token": "<video>"}
#: The -hf chat template (as the InternVL3-*-hf folders ship it).
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\\n' }}{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\\n' }}{% endif %}")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def qwen2_tokenizer(added: list[str], named: dict[str, str] | None = None,
                    vocab_size: int = 400) -> PreTrainedTokenizerBase:
    """A Qwen2Tokenizer (byte-level BPE, Qwen's pre-tokenizer) trained on BPE_CORPUS, with Qwen's special
    tokens and `added` as special added tokens; `named` become attributes (tokenizer.context_image_token...)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    backend.train_from_iterator(BPE_CORPUS, trainer)
    spec = json.loads(backend.to_str())["model"]
    # transformers annotates merges as "a b" strings and unk_token as str; tokenizers' BPE takes the pairs,
    # and Qwen's vocabulary has no unknown token
    tokenizer = Qwen2Tokenizer(vocab=dict(spec["vocab"]), merges=[tuple(m) for m in spec["merges"]],  # type: ignore[misc]
                               unk_token=None,  # type: ignore[arg-type]
                               eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               extra_special_tokens=dict(named or {}))
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIALS + added],
                         special_tokens=True)
    return tokenizer


def informative_(model: PreTrainedModel, seed: int, scale: float = 0.2) -> PreTrainedModel:
    """Weights drawn so every part of the tiny model moves the logits (default inits leave some at zero):
    matrices N(0, scale), vectors (norms, biases, layer scales) shifted by U(-scale/2, scale/2)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
            else:
                param.add_((torch.rand(param.shape, generator=generator) - 0.5) * scale)
    return model


def save_tiny_folder(directory: Path, model_class: type[PreTrainedModel], config: PreTrainedConfig,
                     tokenizer: PreTrainedTokenizerBase, seed: int, preprocessor: dict[str, Any],
                     processor: dict[str, Any],
                     chat_template: str) -> tuple[Path, PreTrainedModel]:
    """A random `model_class` of `config` (informative_ weights from `seed`) saved with its tokenizer, its
    preprocessor_config.json, processor_config.json and chat_template.jinja, as an -hf folder holds them.
    Returns (directory, reference model)."""
    from transformers import GenerationConfig

    torch.manual_seed(seed)
    model = informative_(model_class(config).eval(), seed)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    write_json(directory / "preprocessor_config.json", preprocessor)
    write_json(directory / "processor_config.json", processor)
    (directory / "chat_template.jinja").write_text(chat_template)
    return directory, model


def tiny_qwen2_config(tokenizer: PreTrainedTokenizerBase, width: int = 32, layers: int = 2) -> PreTrainedConfig:
    from transformers import Qwen2Config

    return Qwen2Config(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=4096,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def write_internvl(directory: str | Path, seed: int = 0, tile: int = 56, patch: int = 7) -> tuple[Path,
                   PreTrainedModel]:
    """An InternVL -hf folder with a `tile`-px tile (InternViT patch `patch`, pixel shuffle 0.5) and a
    2-layer Qwen2 language model. Returns (directory, reference model)."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig

    directory = Path(directory)
    tokenizer = qwen2_tokenizer(INTERNVL_TOKENS, INTERNVL_NAMED)
    vision = InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                  image_size=tile, patch_size=patch)
    seq = (tile // patch) ** 2 // 4           # image tokens per tile after the 0.5 pixel shuffle
    config = InternVLConfig(vision_config=vision, text_config=tiny_qwen2_config(tokenizer),
                            image_token_id=cast(int, tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")),
                            image_seq_length=seq)
    preprocessor = {
        "crop_to_patches": False, "do_convert_rgb": True, "do_normalize": True, "do_rescale": True,
        "do_resize": True, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD,
        "image_processor_type": "GotOcr2ImageProcessorFast", "max_patches": 12, "min_patches": 1,
        "processor_class": "InternVLProcessor", "resample": 3, "rescale_factor": 1 / 255,
        "size": {"height": tile, "width": tile}}
    return save_tiny_folder(directory, InternVLForConditionalGeneration, config, tokenizer, seed, preprocessor,
                            {"image_seq_length": seq, "processor_class": "InternVLProcessor"}, INTERNVL_CHAT_TEMPLATE)


def write_internvl_chat(directory: str | Path) -> Path:
    """The config.json of an InternVL chat-code folder (EarthDial's layout: InternVL2 with Phi-3-mini), enough
    to be recognised and refused; no weights."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "config.json", {
        "architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "template": "phi3-chat",
        "auto_map": {"AutoModel": "modeling_internvl_chat.InternVLChatModel"}, "force_image_size": 448,
        "llm_config": {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3"},
        "vision_config": {"architectures": ["InternVisionModel"], "image_size": 448, "patch_size": 14}})
    return directory
