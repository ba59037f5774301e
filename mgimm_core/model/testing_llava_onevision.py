"""Tiny random LLaVA-OneVision checkpoints in transformers' own on-disk format (the llava-hf/llava-onevision-*-hf
folders), for tests and benchmarks (no downloads).

`write_llava_onevision` writes config.json and model.safetensors (save_pretrained of
LlavaOnevisionForConditionalGeneration: SigLIP tower, 2-layer MLP projector, image_newline, Qwen2 language
model), a Qwen2 byte-level BPE tokenizer with <image> and <video> added, preprocessor_config.json (anyres:
`tile`-px base image plus a grid chosen from image_grid_pinpoints, multiples of the tile up to 6 x 6 as
there), processor_config.json and the OneVision chat template. Returns the model too, as the yardstick.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast


from .testing_internvl import qwen2_tokenizer, save_tiny_folder, tiny_qwen2_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: The chat template of the llava-onevision-*-hf folders (images first, then the text).
ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}"
    "{% endfor %}{{'<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
SIGLIP_MEAN = [0.5, 0.5, 0.5]
SIGLIP_STD = [0.5, 0.5, 0.5]


def write_llava_onevision(directory: str | Path, seed: int = 0, tile: int = 32,
                          patch: int = 8) -> tuple[Path, PreTrainedModel]:
    """A LLaVA-OneVision folder with a `tile`-px SigLIP tower (patch `patch`). Returns (directory, reference model)."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, SiglipVisionConfig

    directory = Path(directory)
    tokenizer = qwen2_tokenizer(["<image>", "<video>"])
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                image_size=tile, patch_size=patch, vision_use_head=False)
    pinpoints = [[tile * i, tile * j] for i in range(1, 7) for j in range(1, 7)]
    text = tiny_qwen2_config(tokenizer)
    text.vocab_size = -(-len(tokenizer) // 64) * 64     # padded past the tokenizer, as transformers' converter does
    config = LlavaOnevisionConfig(vision_config=vision, text_config=text,
                                  image_token_index=cast(int, tokenizer.convert_tokens_to_ids("<image>")),
                                  video_token_index=cast(int, tokenizer.convert_tokens_to_ids("<video>")),
                                  image_grid_pinpoints=pinpoints, vision_feature_select_strategy="full",
                                  vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9")
    preprocessor = {
        "do_convert_rgb": True, "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
        "image_grid_pinpoints": pinpoints, "image_mean": SIGLIP_MEAN, "image_std": SIGLIP_STD,
        "image_processor_type": "LlavaOnevisionImageProcessor", "processor_class": "LlavaOnevisionProcessor",
        "resample": 3, "rescale_factor": 1 / 255, "size": {"height": tile, "width": tile}}
    processor = {"num_image_tokens": (tile // patch) ** 2, "processor_class": "LlavaOnevisionProcessor",
                 "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9"}
    return save_tiny_folder(directory, LlavaOnevisionForConditionalGeneration, config, tokenizer, seed, preprocessor,
                            processor, ONEVISION_CHAT_TEMPLATE)
