"""Peak memory while loading a sharded LLaVA-shaped checkpoint, against its bf16 weight size.

    python bench/bench_loading.py [--workdir DIR] [--lm-layers 12] [--shard-mb 500]

Not a test: prints a JSON report. Writes a random ~1B-parameter checkpoint in llava-hf form
(CLIP ViT-L/14-336 vision tower, LLaMA LM of width 2048, bf16 safetensors shards), then loads it
in fresh processes, each reporting its peak RSS (ru_maxrss) and its RSS after imports:

- mgimm: `load_llava(dir, dtype=bfloat16)`, the loader `--model` uses (shard by shard, each tensor
  cast and placed as it is read, parameters created on the meta device);
- transformers: `LlavaForConditionalGeneration.from_pretrained(dir, dtype=bfloat16)`, the same run's
  baseline.

With `--family smolvlm` (or idefics3) the checkpoint has SmolVLM2-256M's shapes (SigLIP-512/16 tower,
SmolLM2-135M) and is loaded as mgimm_core/model/vlm_describer.py loads a transformers-native family on
a GPU: its own class's `from_pretrained(dir, dtype=bfloat16)` (that is the family's loader, so there
is no separate baseline). Tiny test checkpoints say nothing here: the imports outweigh their weights.
`--family internvl` (InternViT-300M at 448 px, a Qwen2.5-0.5B-wide LM: InternVL3-1B-hf's shapes) and
`--family llava-onevision` (SigLIP-so400m at 384 px, a Qwen2-0.5B-wide LM, vocabulary padded to 152000:
llava-onevision-qwen2-0.5b-ov-hf's) are loaded the same way (`--lm-layers` sets their LM depth, 24 there).
`--family qwen2.5-vl` (Qwen2.5-VL-3B's vision tower, 32 blocks of width 1280, and LM width, vocabulary
151936, tied) and `--family qwen3-vl` (Qwen3-VL-2B's: 24 blocks of width 1024, deepstack; Qwen3-1.7B's
LM width) keep 4 LM layers of their 36 / 28, so the folders stay near 1B parameters on small machines.

The figure the loader is held to: peak RSS above the import baseline / bf16 weight bytes < 1.3,
with every weight touched after loading (as a first forward pass does).

    python bench/bench_loading.py --family florence2

measures a transformers-native family instead (mgimm_core/families): a random checkpoint of its
released shapes (Florence-2-base, 0.23B, fp16 as released) loaded to bf16 with the family's own
transformers class, the call VLMDescriber.load makes on CUDA (its loading is transformers').
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
import torch
import mgimm_core.model  # noqa: F401  (imports counted in the baseline, like transformers')
from transformers import LlavaForConditionalGeneration

def status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
torch.set_num_threads(2)
baseline = status_mb("VmRSS")
started = time.perf_counter()
if sys.argv[1] == "mgimm":
    from mgimm_core.model.llava_mgimm import load_llava
    model, _ = load_llava(sys.argv[2], dtype=torch.bfloat16, device="cpu")
elif sys.argv[1] == "family":
    from mgimm_core.model.vlm_describer import load_weights
    from mgimm_core.model_formats import inspect_model
    model = load_weights(inspect_model(sys.argv[2]).family, sys.argv[2], torch.bfloat16)
else:
    model = LlavaForConditionalGeneration.from_pretrained(sys.argv[2], dtype=torch.bfloat16)
seconds = time.perf_counter() - started
# Touch every weight, as the first forward pass does: weights still backed by the memory-mapped
# file count in RSS only once read.
touched = [float(p.detach().sum()) for p in model.parameters()]  # reductions: no full-size copies
params = sum(p.numel() for p in model.parameters())
# VmHWM: this process's peak RSS (ru_maxrss would carry the parent's peak across fork + exec).
print(json.dumps({"baseline_mb": baseline, "peak_mb": status_mb("VmHWM"),
                  "after_mb": status_mb("VmRSS"), "seconds": seconds, "parameters": params,
                  "dtypes": sorted({str(p.dtype) for p in model.parameters()})}))
"""


def write_checkpoint(directory: Path, lm_layers: int, shard_mb: int, stored: str) -> int:
    """A random llava-hf directory of safetensors shards stored in `stored` (fp16, as LLaVA-1.5's
    shards are, so loading to bf16 casts every tensor; or bf16); returns its bf16 weight bytes."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from mgimm_core.model.testing_llava import CLIP_MEAN, CLIP_STD, word_tokenizer

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    text = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=lm_layers, num_attention_heads=16,
                       num_key_value_heads=16, vocab_size=32000, max_position_embeddings=2048)
    tokenizer = word_tokenizer()
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids(
        "<image>"), image_seq_length=576)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in LlavaForConditionalGeneration(config).state_dict().items()}
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    (directory / "preprocessor_config.json").write_text(json.dumps({"image_mean": CLIP_MEAN, "image_std": CLIP_STD}))
    generator = torch.Generator().manual_seed(0)
    shards, current, size, total = [], {}, 0, 0
    for name, shape in shapes.items():
        tensor = (torch.randn(shape, generator=generator) * 0.02).to(getattr(torch, {"fp16": "float16", "bf16":
                                                                                  "bfloat16"}[stored]))
        current[name] = tensor
        size += tensor.numel() * 2
        total += tensor.numel() * 2
        if size >= shard_mb * 2**20:
            shards.append(current)
            current, size = {}, 0
            _save(directory, shards, save_file)
    if current:
        shards.append(current)
        _save(directory, shards, save_file)
    count = len(shards)
    weight_map = {}
    for i in range(1, count + 1):
        old = directory / f"part-{i}.safetensors"
        new = directory / f"model-{i:05d}-of-{count:05d}.safetensors"
        old.rename(new)
        weight_map.update({name: new.name for name in shards[i - 1]})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return total


def write_smolvlm_checkpoint(directory: Path, model_type: str, shard_mb: int, stored: str) -> int:
    """A random folder with SmolVLM2-256M's shapes (bf16 or fp16 safetensors shards, its config and
    tiny tokenizer/processor files from mgimm_core/model/testing_smolvlm.py); its bf16 weight bytes."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    import transformers
    from mgimm_core.model.testing_smolvlm import FORMATS, write_smolvlm

    write_smolvlm(directory, model_type)            # tokenizer, processor, chat template (weights replaced)
    for old in directory.glob("model*.safetensors*"):
        old.unlink()
    folder = FORMATS[model_type]
    tokens = json.loads((directory / "config.json").read_text())
    text = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                       num_key_value_heads=3, vocab_size=49280, max_position_embeddings=8192, tie_word_embeddings=True)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=512, patch_size=16)
    config = getattr(transformers, folder.config_class)(vision_config=vision, text_config=text.to_dict(), scale_factor=4,
                                                        image_token_id=tokens["image_token_id"])
    model_class = getattr(transformers, folder.model_class)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in model_class(config).state_dict().items()}
    config.save_pretrained(str(directory))
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[stored]
    generator = torch.Generator().manual_seed(0)
    shards, current, size, total = [], {}, 0, 0
    for name, shape in shapes.items():
        current[name] = (torch.randn(shape, generator=generator) * 0.02).to(dtype)
        size += current[name].numel() * 2
        total += current[name].numel() * 2
        if size >= shard_mb * 2**20:
            shards.append(current)
            current, size = {}, 0
            _save(directory, shards, save_file)
    if current:
        shards.append(current)
        _save(directory, shards, save_file)
    _index(directory, shards)
    return total


def native_config(family: str, lm_layers: int):
    """The config of a transformers-native family at its smallest real model's shapes."""
    from transformers import (InternVLConfig, InternVLVisionConfig, LlavaOnevisionConfig, Qwen2_5_VLConfig,
                              Qwen2Config, Qwen3VLConfig, SiglipVisionConfig)

    qwen_text = dict(hidden_size=2048, num_hidden_layers=lm_layers, num_attention_heads=16, vocab_size=151936,
                     max_position_embeddings=128000, tie_word_embeddings=True)
    if family == "qwen2.5-vl":           # Qwen2.5-VL-3B-Instruct
        return Qwen2_5_VLConfig(
            text_config={**qwen_text, "intermediate_size": 11008, "num_key_value_heads": 2, "rope_parameters": {
                "rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}},
            vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                               fullatt_block_indexes=[7, 15, 23, 31]), tie_word_embeddings=True), \
            "Qwen2_5_VLForConditionalGeneration"
    if family == "qwen3-vl":             # Qwen3-VL-2B-Instruct
        return Qwen3VLConfig(
            text_config={**qwen_text, "intermediate_size": 6144, "num_key_value_heads": 8, "head_dim": 128,
                         "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0,
                                             "mrope_section": [24, 20, 20], "mrope_interleaved": True}},
            vision_config=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
                               deepstack_visual_indexes=[5, 11, 17]), tie_word_embeddings=True), \
            "Qwen3VLForConditionalGeneration"

    if family == "internvl":             # InternVL3-1B-hf: InternViT-300M-448px + Qwen2.5-0.5B
        vision = InternVLVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                      num_attention_heads=16, image_size=448, patch_size=14)
        text = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=lm_layers,
                           num_attention_heads=14, num_key_value_heads=2, vocab_size=151674, tie_word_embeddings=True)
        return InternVLConfig(vision_config=vision, text_config=text, image_token_id=151667), \
            "InternVLForConditionalGeneration"
    # llava-onevision-qwen2-0.5b-ov-hf: SigLIP-so400m-384 (26 layers) + Qwen2-0.5B, vocabulary padded to 152000
    vision = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16,
                                image_size=384, patch_size=14, vision_use_head=False)
    text = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=lm_layers, num_attention_heads=14,
                       num_key_value_heads=2, vocab_size=152000, tie_word_embeddings=True)
    return LlavaOnevisionConfig(vision_config=vision, text_config=text, tie_word_embeddings=True), \
        "LlavaOnevisionForConditionalGeneration"


def write_native_checkpoint(directory: Path, family: str, lm_layers: int, shard_mb: int, stored: str) -> int:
    """A random InternVL or LLaVA-OneVision folder (config.json and safetensors shards; the family is told
    from config.json alone); its bf16 weight bytes. Tied output embeddings are stored once, as there."""
    import torch
    from safetensors.torch import save_file

    import transformers

    config, class_name = native_config(family, lm_layers)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in getattr(transformers, class_name)(config).state_dict().items()
                  if k != "lm_head.weight"}
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(directory))
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[stored]
    generator = torch.Generator().manual_seed(0)
    shards, current, size, total = [], {}, 0, 0
    for name, shape in shapes.items():
        current[name] = (torch.randn(shape, generator=generator) * 0.02).to(dtype)
        size += current[name].numel() * 2
        total += current[name].numel() * 2
        if size >= shard_mb * 2**20:
            shards.append(current)
            current, size = {}, 0
            _save(directory, shards, save_file)
    if current:
        shards.append(current)
        _save(directory, shards, save_file)
    _index(directory, shards)
    return total


def _index(directory: Path, shards: list) -> None:
    """Name the shards as save_pretrained does and write their index."""
    count = len(shards)
    weight_map = {}
    for i in range(1, count + 1):
        new = directory / f"model-{i:05d}-of-{count:05d}.safetensors"
        (directory / f"part-{i}.safetensors").rename(new)
        weight_map.update({name: new.name for name in shards[i - 1]})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _save(directory: Path, shards: list, save_file) -> None:
    """Write the newest shard and drop its tensors (only names are kept), so writing stays lean."""
    index = len(shards)
    save_file(shards[-1], str(directory / f"part-{index}.safetensors"))
    shards[-1] = dict.fromkeys(shards[-1])


#: Writers of a native family's checkpoint at its released shapes: (directory) -> None.
FAMILY_CHECKPOINTS = {
    "florence2": lambda directory: _write_florence2_base(directory),
    "smolvlm": lambda directory: write_smolvlm_checkpoint(directory, "smolvlm", 500, "bf16"),
    "idefics3": lambda directory: write_smolvlm_checkpoint(directory, "idefics3", 500, "bf16"),
    "internvl": lambda directory: write_native_checkpoint(directory, "internvl", 24, 500, "bf16"),
    "llava-onevision": lambda directory: write_native_checkpoint(directory, "llava-onevision", 24, 500, "bf16"),
    "qwen2.5-vl": lambda directory: write_native_checkpoint(directory, "qwen2.5-vl", 4, 500, "bf16"),
    "qwen3-vl": lambda directory: write_native_checkpoint(directory, "qwen3-vl", 4, 500, "bf16"),
}


def _write_florence2_base(directory: Path) -> None:
    import torch

    from mgimm_core.model.testing_florence2 import write_florence2

    write_florence2(directory, base=True, stored=torch.float16)


def measure_family(name: str, work: Path) -> dict:
    """The native family's checkpoint written, then loaded to bf16 in a fresh process."""
    from mgimm_core.model_formats import weight_files
    from mgimm_core.model_info import tensor_stats

    started = time.perf_counter()
    directory = work / name
    FAMILY_CHECKPOINTS[name](directory)
    parameters, stored = tensor_stats(weight_files(directory))
    report: dict = {"family": name, "weight_bytes_bf16": 2 * parameters, "stored": stored,
                    "write_s": round(time.perf_counter() - started, 1)}
    result = measure("family", directory)
    weight_mb = 2 * parameters / 2**20
    result["peak_over_baseline_vs_bf16_weights"] = round((result["peak_mb"] - result["baseline_mb"]) / weight_mb, 3)
    result["peak_vs_bf16_weights"] = round(result["peak_mb"] / weight_mb, 3)
    report["load"] = {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}
    return report


def measure(kind: str, directory: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, kind, str(directory)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{kind} load failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--lm-layers", type=int, default=12)
    parser.add_argument("--shard-mb", type=int, default=500)
    parser.add_argument("--stored", choices=("fp16", "bf16"), default="fp16",
                        help="dtype of the written shards (LLaVA-1.5's are fp16; loading is to bf16)")
    parser.add_argument("--family", choices=sorted(FAMILY_CHECKPOINTS), default=None,
                        help="a transformers-native family at its released shapes instead of the LLaVA checkpoint")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_loading_"))
    if args.family:
        print(json.dumps(measure_family(args.family, work), indent=2))
        return
    started = time.perf_counter()
    weight_bytes = write_checkpoint(work / "llava", args.lm_layers, args.shard_mb, args.stored)
    report = {"weight_bytes_bf16": weight_bytes, "stored": args.stored, "write_s": round(time.perf_counter() - started, 1),
              "shards": len(list((work / "llava").glob("model-*.safetensors")))}
    weight_mb = weight_bytes / 2**20
    for kind in ("mgimm", "transformers"):
        result = measure(kind, work / "llava")
        result["peak_over_baseline_vs_bf16_weights"] = round((result["peak_mb"] - result["baseline_mb"]) / weight_mb, 3)
        result["peak_vs_bf16_weights"] = round(result["peak_mb"] / weight_mb, 3)
        report[kind] = {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
