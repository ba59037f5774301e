"""A tiny RANDOM LLaVA-1.5-shaped (llava-hf) folder (weights, tokenizer, processor, chat template) for a third-party
server to serve in tests: nothing is downloaded, and it knows nothing (its answers are noise).

    python scripts/make_tiny_vlm.py OUT_DIR

Run with the Python of the server's own environment (transformers and tokenizers there).
"""

from __future__ import annotations

import sys
from pathlib import Path

SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
#: llava-hf's LLaVA-1.5 conversation form: "USER: <image>\n{text} ASSISTANT:"
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %} "
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
CORPUS = ["What is the main object in the region outlined in red of this remote sensing image?",
          "Answer with a JSON object with the keys object, color, shape, size, orientation.",
          'Describe the region {"object": "building", "color": "red", "shape": "rectangular"} in detail.',
          "the land cover and the attributes, counts and positions of the objects, none, small, large",
          "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;!?'\"()[]{}<>-_/\\"]


def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", model_max_length=2048, chat_template=CHAT_TEMPLATE)


def main(out: str) -> None:
    import torch
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    torch.manual_seed(0)
    tok = tokenizer()
    image_size, patch = 112, 14
    config = LlavaConfig(
        # head sizes of 64: vLLM's CPU attention kernels take 32..256 in steps it supports, not 16
        vision_config={"model_type": "clip_vision_model", "hidden_size": 64, "intermediate_size": 128,
                       "num_hidden_layers": 2, "num_attention_heads": 1, "image_size": image_size, "patch_size": patch,
                       "projection_dim": 64},
        text_config={"model_type": "llama", "vocab_size": len(tok), "hidden_size": 128, "intermediate_size": 256,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
                     "max_position_embeddings": 2048, "bos_token_id": tok.bos_token_id,
                     "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id},
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu")
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=patch,
                               vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                               num_additional_image_tokens=1)
    Path(out).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    _hub_layout(Path(out) / "model.safetensors")
    processor.save_pretrained(out)
    tok.save_pretrained(out)
    print(f"tiny random llava-hf ({sum(p.numel() for p in model.parameters())} parameters) in {out}")


def _hub_layout(path: Path) -> None:
    """Tensor names as llava-hf's hub folders have them (`vision_tower.vision_model.*`), which servers
    such as vLLM load; this transformers writes the CLIP tower without its `vision_model.` level."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    renamed = {("vision_tower.vision_model." + k[len("vision_tower."):]
                if k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model.") else k): v
               for k, v in tensors.items()}
    save_file(renamed, str(path), metadata={"format": "pt"})


if __name__ == "__main__":
    main(sys.argv[1])
