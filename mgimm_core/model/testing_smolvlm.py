"""Tiny random SmolVLM / Idefics3 checkpoints in their real on-disk format, for tests and benchmarks.

A folder as `save_pretrained` writes it for HuggingFaceTB/SmolVLM2-* (model_type `smolvlm`) or
HuggingFaceM4/Idefics3-8B-Llama3 and SmolVLM v1 (model_type `idefics3`): config.json and
generation_config.json, model.safetensors, a byte-level BPE tokenizer (tokenizer.json +
tokenizer_config.json) with the family's special tokens, processor_config.json /
preprocessor_config.json (image splitting on, as the real folders ship it) and the chat template.
No downloads: the tokenizer is trained here on a few sentences.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from .testing_folders import randomise_, write_json

if TYPE_CHECKING:
    from collections.abc import Callable
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

#: The families' special tokens (SmolVLM's tokenizer adds <global-img> and the row/col tile tokens).
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>",
                  "<image>", "<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]

# The chat templates as the real folders ship them (chat_template.jinja): SmolVLM starts with
# <|im_start|>, Idefics3-8B-Llama3 with <|begin_of_text|>; the image token goes where the message puts it.
_TURNS = ("{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == "
          "'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == "
          "'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
          "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")


@dataclass(frozen=True)
class FolderFormat:
    """What differs between the two folder formats: transformers' class names, BOS, chat template."""

    model_class: str
    config_class: str
    image_processor_class: str
    processor_class: str
    tokenizer_class: str
    bos: str

    @property
    def chat_template(self) -> str:
        return self.bos + _TURNS


#: By config.json model_type.
FORMATS = {
    "smolvlm": FolderFormat("SmolVLMForConditionalGeneration", "SmolVLMConfig", "SmolVLMImageProcessorPil",
                            "SmolVLMProcessor", "GPT2Tokenizer", "<|im_start|>"),
    "idefics3": FolderFormat("Idefics3ForConditionalGeneration", "Idefics3Config", "Idefics3ImageProcessorPil",
                             "Idefics3Processor", "PreTrainedTokenizerFast", "<|begin_of_text|>"),
}

_CORPUS = [
    "What is the main object in the region outlined in red of this remote sensing image?",
    "Describe this image in detail: the land cover and the attributes, counts and positions of the objects.",
    'Answer with a JSON object with the keys object, color, shape, size, orientation: {"object": "building", '
    '"color": "white", "shape": "rectangular", "size": "large", "orientation": "north"}',
    "a small red car parked near a large gray building with a round white storage tank, trees and a road.",
    "farmland, water, ship, harbor, airplane, runway, bridge, field, forest, none 0 1 2 3 4 5 6 7 8 9",
]


def byte_bpe_tokenizer(model_type: str, vocab_size: int = 400) -> PreTrainedTokenizerBase:
    """A byte-level BPE (any text encodes, as SmolLM2's and Llama 3's do) with the family's special
    tokens, in the class its folders name: GPT2Tokenizer (SmolVLM's SmolLM2), PreTrainedTokenizerFast
    with <|begin_of_text|> (Idefics3-8B-Llama3)."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bos = FORMATS[model_type].bos
    specials = SPECIAL_TOKENS + ([bos] if bos not in SPECIAL_TOKENS else [])
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer_class = getattr(transformers, FORMATS[model_type].tokenizer_class)
    tokenizer: PreTrainedTokenizerBase = tokenizer_class(tokenizer_object=backend, bos_token=bos,
                                                         eos_token="<end_of_utterance>", pad_token="<|im_end|>",
                                                         unk_token="<|endoftext|>")
    return tokenizer


def tiny_config(model_type: str, tokenizer: PreTrainedTokenizerBase, image_size: int = 32, patch_size: int = 8,
                scale_factor: int = 2,
                width: int = 32, layers: int = 1) -> PreTrainedConfig:
    """The family's config with tiny vision and Llama text towers (`image_size` px, `patch_size` px
    patches, pixel shuffle by `scale_factor`: (image_size / patch_size / scale_factor)^2 tokens per image)."""
    import transformers
    from transformers import LlamaConfig

    vision = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=4,
                  image_size=image_size, patch_size=patch_size)
    ids = cast("Callable[[str], int]", tokenizer.convert_tokens_to_ids)     # one token, one id
    text = LlamaConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tokenizer),
                       max_position_embeddings=2048, pad_token_id=ids("<|im_end|>"),
                       bos_token_id=ids(tokenizer.bos_token), eos_token_id=ids("<end_of_utterance>"), rms_norm_eps=1e-5)
    config_class = getattr(transformers, FORMATS[model_type].config_class)
    config: PreTrainedConfig = config_class(vision_config=vision, text_config=text.to_dict(), scale_factor=scale_factor,
                                            image_token_id=ids("<image>"), pad_token_id=ids("<|im_end|>"),
                                            tie_word_embeddings=False)
    return config


def tiny_model(config: PreTrainedConfig, seed: int = 0) -> PreTrainedModel:
    """A random model of `config` (fp32, eval); every tensor drawn so that each part moves the logits."""
    import transformers

    model_class = getattr(transformers, FORMATS[config.model_type].model_class)
    torch.manual_seed(seed)
    model: PreTrainedModel = randomise_(model_class(config).eval())
    return model


def write_smolvlm(directory: str | Path, model_type: str = "smolvlm", seed: int = 0, image_size: int = 32,
                  patch_size: int = 8, scale_factor: int = 2, width: int = 32,
                  layers: int = 1) -> tuple[Path, PreTrainedModel]:
    """A SmolVLM (model_type "smolvlm") or Idefics3 / SmolVLM v1 ("idefics3") folder. Returns
    (directory, reference model holding the same weights)."""
    import transformers
    from transformers import GenerationConfig, Idefics3Processor

    directory = Path(directory)
    folder = FORMATS[model_type]
    tokenizer = byte_bpe_tokenizer(model_type)
    config = tiny_config(model_type, tokenizer, image_size, patch_size, scale_factor, width, layers)
    model = tiny_model(config, seed)
    model.generation_config = GenerationConfig(bos_token_id=config.text_config.bos_token_id,
                                               eos_token_id=config.text_config.eos_token_id,
                                               pad_token_id=config.text_config.pad_token_id)
    model.save_pretrained(str(directory))
    # The real folders split an image into max_image_size tiles of a 4x larger resize, plus the whole.
    image_settings = dict(size={"longest_edge": 4 * image_size}, max_image_size={"longest_edge": image_size},
                          do_image_splitting=True, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    image_seq_len = (image_size // patch_size) ** 2 // scale_factor ** 2
    image_processor = getattr(transformers, folder.image_processor_class)(**image_settings)
    # SmolVLMProcessor would also need a video processor (torchvision): a smolvlm folder's files are
    # written as its processor writes them, with its class name, from the image-only Idefics3Processor.
    processor = Idefics3Processor(image_processor, tokenizer, image_seq_len=image_seq_len,
                                  chat_template=folder.chat_template)
    processor.save_pretrained(str(directory))
    path = directory / "processor_config.json"
    write_json(path, dict(json.loads(path.read_text()), processor_class=folder.processor_class))
    return directory, model
