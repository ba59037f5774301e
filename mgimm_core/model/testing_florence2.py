"""Tiny random Florence-2 checkpoints in transformers' native on-disk format, for tests and benchmarks.

No downloads: the tokenizer is a small byte-level BPE (BART's kind) trained here on a few words,
with Florence-2's added tokens (`<loc_0>`..`<loc_999>`, its region/caption markers) and `<image>`,
saved as the `RobertaTokenizer` transformers 5 loads for BART; the processor is Florence2Processor
over a CLIPImageProcessor that squashes every image to a square side, as the released folders'
preprocessor does (768 there). `write_florence2` returns the Florence2ForConditionalGeneration
holding the written weights, the yardstick the loaded model is compared against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from .testing_folders import randomise_, write_json
from .testing_mgimm import TINY_WORDS

if TYPE_CHECKING:
    from transformers import Florence2Config, PreTrainedModel, PreTrainedTokenizerBase

#: Words the tiny BPE is trained on (its merges), besides the 256 byte symbols.
FLORENCE_WORDS = TINY_WORDS + ["what", "is", "does", "describe", "in", "of", "this", "image", "building", "field",
                               "water", "tree", "parking", "lot", "roof", "with", "and", "on", "green", "blue"]
#: Florence-2's added tokens, in its tokenizer's order (after BART's own vocabulary).
FLORENCE_TOKENS = (["<od>", "</od>", "<ocr>", "</ocr>"] + [f"<loc_{i}>" for i in range(1000)]
                   + ["<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>",
                      "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>",
                      "</region_to_desciption>", "<proposal>", "</proposal>", "<poly>", "</poly>", "<and>"])
#: The released folders' image normalisation (ImageNet mean and std).
FLORENCE_MEAN = [0.485, 0.456, 0.406]
FLORENCE_STD = [0.229, 0.224, 0.225]
#: The DaViT tower's total stride (patch strides 4, 2, 2, 2): a side of S pixels gives (S/32)^2 + 1 tokens.
VISION_STRIDE = 32


def florence_tokenizer() -> PreTrainedTokenizerBase:
    """BART-style byte-level BPE (<s>=0, <pad>=1, </s>=2, <unk>=3 ... <mask>) plus Florence-2's tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AddedToken, RobertaTokenizer

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator([" ".join(FLORENCE_WORDS)] * 4, trainer=trainer)
    trained = json.loads(backend.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tokenizer = RobertaTokenizer(vocab=trained["vocab"], merges=merges,  # type: ignore[arg-type]  # stubs: str only
                                 extra_special_tokens={"image_token": "<image>"})
    tokenizer.add_special_tokens({"mask_token": "<mask>", "additional_special_tokens": FLORENCE_TOKENS})
    tokenizer.add_tokens(AddedToken("<image>", special=True, normalized=False), special_tokens=True)
    return tokenizer


def florence_processor(tokenizer: PreTrainedTokenizerBase, side: int = 64) -> Any:    # a Florence2Processor
    """Florence2Processor resizing every image to side x side (bicubic), one token per 32 px cell plus one."""
    from transformers import CLIPImageProcessorPil, Florence2Processor

    square = {"height": side, "width": side}
    image_processor = CLIPImageProcessorPil(size=square, crop_size=square, do_center_crop=False, resample=3,
                                            image_mean=FLORENCE_MEAN, image_std=FLORENCE_STD,
                                            image_seq_length=(side // VISION_STRIDE) ** 2 + 1)
    return Florence2Processor(image_processor=image_processor, tokenizer=tokenizer,
                              post_processor_config={"pure_text": {}, "bboxes": {}, "description_with_bboxes": {}})


#: Florence-2-base's shapes (microsoft/Florence-2-base, 0.23B parameters), for loading benchmarks.
BASE_VISION: dict[str, Any] = dict(depths=[1, 1, 9, 1], embed_dim=[128, 256, 512, 1024], num_heads=[4, 8, 16, 32],
                                   num_groups=[4, 8, 16, 32], window_size=12, projection_dim=768)
BASE_TEXT: dict[str, Any] = dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072)
BASE_VOCAB_SIZE = 51328


def florence2_config(vocab_size: int, image_token_id: int, width: int = 32, base: bool = False) -> Florence2Config:
    """Florence2Config of the tiny model (a 4-stage DaViT of one block each, a one-layer BART of `width`), or
    of Florence-2-base's shapes (base=True; vocab_size then at least the released 51328 rows)."""
    from transformers import BartConfig, Florence2Config, Florence2VisionConfig

    if base:
        vision = Florence2VisionConfig(drop_path_rate=0.0, **BASE_VISION)
        text = BartConfig(vocab_size=max(vocab_size, BASE_VOCAB_SIZE), max_position_embeddings=1024, **BASE_TEXT)
    else:
        vision = Florence2VisionConfig(depths=[1, 1, 1, 1], embed_dim=[8, 16, 16, width], num_heads=[1, 2, 2, 4],
                                       num_groups=[1, 2, 2, 4], window_size=2, projection_dim=width,
                                       drop_path_rate=0.0)
        text = BartConfig(vocab_size=vocab_size, d_model=width, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * width,
                          decoder_ffn_dim=2 * width, max_position_embeddings=1024)
    return Florence2Config(text_config=text.to_dict(), vision_config=vision.to_dict(), image_token_id=image_token_id)


def tiny_florence2(vocab_size: int, image_token_id: int, width: int = 32, seed: int = 0, words: int | None = None,
                   base: bool = False) -> PreTrainedModel:
    """A random Florence2ForConditionalGeneration (fp32, eval) of `florence2_config`'s shapes, every tensor
    drawn from `seed` (none left at an initialiser's zeros or ones). The (tied) embedding rows from
    `words` on, Florence-2's added tokens, are drawn ten times smaller: as in the released models,
    greedy answers to the region tasks are then words, not location tokens."""
    from transformers import Florence2ForConditionalGeneration

    torch.manual_seed(seed)
    model = randomise_(Florence2ForConditionalGeneration(florence2_config(vocab_size, image_token_id, width,
                                                                          base)).eval())
    if words is not None:
        with torch.no_grad():
            model.get_input_embeddings().weight[words:] *= 0.1
    florence: PreTrainedModel = model
    return florence


def write_florence2(directory: str | Path, seed: int = 0, side: int = 64, hub_layout: bool = True,
                    base: bool = False, stored: torch.dtype = torch.float32) -> tuple[Path, PreTrainedModel]:
    """A Florence-2 folder as florence-community/Florence-2-* holds it: config.json, generation_config.json,
    model.safetensors, the tokenizer files, processor_config.json and (hub_layout) the image processor in
    its own preprocessor_config.json; hub_layout=False keeps transformers 5's save_pretrained layout (the
    image processor inside processor_config.json). base: Florence-2-base's shapes (768 px input), weights
    stored in `stored` (the released folders hold fp16). Returns (directory, reference model)."""
    directory = Path(directory)
    side = 768 if base else side
    tokenizer = florence_tokenizer()
    processor = florence_processor(tokenizer, side)
    model = tiny_florence2(len(tokenizer), tokenizer.image_token_id, seed=seed,
                           words=cast(int, tokenizer.convert_tokens_to_ids(FLORENCE_TOKENS[0])), base=base)
    model.to(stored).save_pretrained(str(directory))  # type: ignore[arg-type]  # transformers' wrapped `to`
    processor.save_pretrained(str(directory))
    if hub_layout:
        path = directory / "processor_config.json"
        settings = json.loads(path.read_text())
        image = settings.pop("image_processor")
        image = json.loads(image) if isinstance(image, str) else image
        write_json(directory / "preprocessor_config.json", image)
        write_json(path, settings)
    return directory, model


def write_florence2_remote_code(directory: str | Path) -> Path:
    """The config.json of Microsoft's original Florence-2 layout (its own code through auto_map, a DaViT
    vision config) beside a small weights file: what microsoft/Florence-2-* and Falcon folders look like
    to the registry."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["Florence2ForConditionalGeneration"], "model_type": "florence2",
              "auto_map": {"AutoConfig": "configuration_florence2.Florence2Config",
                           "AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration"},
              "vision_config": {"model_type": "davit", "dim_embed": [8, 16, 16, 32]},
              "text_config": {"model_type": "florence2_language", "d_model": 32}}
    write_json(directory / "config.json", config)
    save_file({"language_model.lm_head.weight": torch.zeros(4, 4)}, str(directory / "model.safetensors"))
    return directory
