"""Tiny random LLaVA-family checkpoints, written in each on-disk format mgimm-geo reads.

For tests and benchmarks: no downloads. Every writer returns the Hugging Face
`LlavaForConditionalGeneration` holding the same weights, the yardstick the loaded MGIMM model is
compared against.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F

from .testing_folders import randomise_, write_json
from .testing_mgimm import TINY_WORDS

if TYPE_CHECKING:
    from transformers import CLIPVisionConfig, LlamaConfig, PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

LLAVA_WORDS = TINY_WORDS + ["what", "is", "object", "in", "of", "this", "image", "[", "]", "{", "}", "<", ">", "|",
                            "identify", "present", "at", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def word_tokenizer(with_image_token: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: <pad> <s> </s> <unk> [<image>] then LLAVA_WORDS. Original-format
    LLaVA tokenizers have no <image> token (with_image_token=False)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"] + (["<image>"] if with_image_token else [])
    vocab = {token: i for i, token in enumerate(specials)}
    for word in LLAVA_WORDS:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    extra = {"additional_special_tokens": ["<image>"]} if with_image_token else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", **extra)


def tiny_vision_config(image_size: int = 32, patch_size: int = 8, width: int = 32,
                       layers: int = 2) -> CLIPVisionConfig:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                            num_attention_heads=4, image_size=image_size, patch_size=patch_size, projection_dim=width)


def tiny_text_config(vocab_size: int, width: int = 32, layers: int = 2, **overrides: Any) -> LlamaConfig:
    from transformers import LlamaConfig

    settings: dict[str, Any] = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                                    num_attention_heads=4, num_key_value_heads=4, vocab_size=vocab_size,
                                    max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    settings.update(overrides)
    return LlamaConfig(**settings)


def tiny_llava(vision_config: PreTrainedConfig, text_config: PreTrainedConfig, image_token_index: int,
               seed: int = 0) -> PreTrainedModel:
    """A random LlavaForConditionalGeneration (fp32, eval), weights fixed by `seed`."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    grid = vision_config.image_size // vision_config.patch_size
    config = LlavaConfig(vision_config=vision_config, text_config=text_config, image_token_index=image_token_index,
                         image_seq_length=grid * grid, vision_feature_layer=-2,
                         vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    # randomised: LLaVA initialises some parts to zero
    model: PreTrainedModel = randomise_(LlavaForConditionalGeneration(config).eval())
    return model


def write_llava_hf(directory: str | Path, seed: int = 0) -> tuple[Path, PreTrainedModel]:
    """A llava-hf directory (save_pretrained of LlavaForConditionalGeneration + tokenizer +
    preprocessor config). Returns (directory, reference model)."""
    directory = Path(directory)
    tokenizer = word_tokenizer()
    model = tiny_llava(tiny_vision_config(), tiny_text_config(len(tokenizer)),
                       cast(int, tokenizer.convert_tokens_to_ids("<image>")), seed)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    write_json(directory / "preprocessor_config.json", {"image_mean": CLIP_MEAN, "image_std": CLIP_STD})
    return directory, model


def write_clip_vision(directory: str | Path, vision_model: PreTrainedModel) -> Path:
    """A CLIP vision-tower directory (as openai/clip-vit-large-patch14-336 is used by LLaVA)."""
    directory = Path(directory)
    vision_model.save_pretrained(str(directory))
    write_json(directory / "preprocessor_config.json", {"image_mean": CLIP_MEAN, "image_std": CLIP_STD})
    return directory


def original_state_dict(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The LM + projector tensors of a LlavaForConditionalGeneration under LLaVA's original names."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("model.language_model."):
            state["model." + name[len("model.language_model."):]] = tensor
        elif name == "lm_head.weight":
            state[name] = tensor
        elif name.startswith("model.multi_modal_projector.linear_"):
            index = "0" if ".linear_1." in name else "2"
            state[f"model.mm_projector.{index}.{name.rsplit('.', 1)[1]}"] = tensor
    return state


def interpolate_clip_positions(weight: torch.Tensor, grid: int) -> torch.Tensor:
    """GeoChat's CLIP position-embedding extension (class position kept, the patch grid resized
    bicubically, corners aligned), written independently of the loader's for the comparison."""
    side = int((weight.shape[0] - 1) ** 0.5)
    grid_in = weight[1:].T.reshape(1, weight.shape[1], side, side)
    grid_out = F.interpolate(grid_in, size=grid, mode="bicubic", align_corners=True)
    return torch.cat([weight[:1], grid_out.reshape(weight.shape[1], grid * grid).T])


def write_llava_original(directory: str | Path, vision_dir: str | Path, seed: int = 0, geochat: bool = False,
                         shards: int = 2, pickled: bool = True) -> tuple[Path, PreTrainedModel]:
    """An original-format LLaVA-1.5 (or GeoChat) directory: LLaMA config + mm_* keys, LM and
    projector tensors in `shards` files (pickled `.bin` with an index, or safetensors), a tokenizer
    without <image>, and the vision tower in `vision_dir` (named by mm_vision_tower, not included).
    GeoChat's tower is 336 px with patch 14, extended to 504 px at load. Returns (directory, reference
    model), the reference being the LlavaForConditionalGeneration that computes the same outputs."""
    from transformers import CLIPVisionModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = word_tokenizer(with_image_token=False)
    vision_config = tiny_vision_config(336, 14, layers=1) if geochat else tiny_vision_config()
    text_config = tiny_text_config(len(tokenizer))
    torch.manual_seed(seed + 1)
    vision_model = CLIPVisionModel(vision_config).eval()
    write_clip_vision(vision_dir, vision_model)
    # The yardstick sees what the checkpoint means: GeoChat's tower at 504 px, positions extended.
    run_vision = tiny_vision_config(504, 14, layers=1) if geochat else vision_config
    # <image> is never embedded (its positions get image features), so an id absent from unpadded
    # prompts (<pad>) stands in for it here.
    reference = tiny_llava(run_vision, text_config, image_token_index=0, seed=seed)
    vision_state = vision_model.state_dict()
    if geochat:
        key = next(k for k in vision_state if k.endswith("position_embedding.weight"))
        vision_state[key] = interpolate_clip_positions(vision_state[key], 504 // 14)
    missing = reference.model.vision_tower.load_state_dict(vision_state, strict=False)
    assert not missing.missing_keys, missing.missing_keys

    state = original_state_dict(reference)
    names = sorted(state)
    groups = [names[i::shards] for i in range(shards)]
    weight_map, suffix = {}, ".bin" if pickled else ".safetensors"
    stem = "pytorch_model" if pickled else "model"
    for i, group in enumerate(groups, start=1):
        shard = f"{stem}-{i:05d}-of-{shards:05d}{suffix}"
        part = {name: state[name].contiguous() for name in group}
        if pickled:
            torch.save(part, directory / shard)
        else:
            from safetensors.torch import save_file

            save_file(part, str(directory / shard))
        weight_map.update({name: shard for name in group})
    write_json(directory / f"{stem}{suffix}.index.json", {"metadata": {}, "weight_map": weight_map})
    config = text_config.to_dict()
    for key in ("transformers_version", "architectures", "dtype", "torch_dtype"):
        config.pop(key, None)
    config.update(model_type="geochat" if geochat else "llava",
                  architectures=["GeoChatLlamaForCausalLM" if geochat else "LlavaLlamaForCausalLM"],
                  mm_vision_tower=str(vision_dir), mm_hidden_size=vision_config.hidden_size,
                  mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2, mm_vision_select_feature="patch",
                  mm_use_im_start_end=False, mm_use_im_patch_token=False, image_aspect_ratio="pad")
    write_json(directory / "config.json", config)
    tokenizer.save_pretrained(str(directory))
    return directory, reference
