"""GPU check for the MGIMM model: correctness on the device, bf16 vs fp32, full-size timings.

    python bench/gpu_check.py --out gpu_check.json          # on a CUDA machine (H200: ~5 min)
    python bench/gpu_check.py --tiny                        # the same steps, tiny sizes, on CPU

Steps:
 1. equivalence on the device: batched greedy == one-at-a-time greedy (prompts of different
    lengths), save/load round trip gives identical logits, moving a box changes only its tokens;
 2. bf16 against fp32 on the same random weights: logits error relative to their spread, top-1
    agreement;
 3. timing of a randomly initialised full-size model (CLIP ViT-L/14-336 + LLaMA-7B shapes, bf16):
    prefill of one 620-token prompt (576 global + 2 region + text tokens), and decode tokens/s at
    batch 1 / 32 / 128, each against the memory-bandwidth floor (weights + KV cache read once per
    step). Random weights time the same as trained ones: the work does not depend on values.
 4. regions/s and tokens/s of a naive one-region-at-a-time HF `generate` loop against batched
    generation (and batched with the static, compiled KV cache) on the same full-size model, and
    decode at batch 1 with the static cache against the bandwidth floor.
Results go to stdout as a table and to --out as JSON; copy them into docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np
import torch

from mgimm_core.model import MGIMMConfig, MGIMMForConditionalGeneration, demo_region_settings
from mgimm_core.model.testing_mgimm import random_chip, tiny_model, tiny_processor

H200_BANDWIDTH = 4.8e12  # bytes/s (docs/performance.md, bandwidth-floor arithmetic)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat=3):
    """Best wall time of `repeat` runs after one warm-up, seconds."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def check_equivalence(device) -> dict:
    """Step 1 on the device, fp32, tiny model: the same properties the CPU tests assert."""
    model = tiny_model(seed=3, **demo_region_settings(), global_tokens=4).to(device)
    processor = tiny_processor(model.config)
    chips = [random_chip(32, 32), random_chip(24, 40, 1), random_chip(32, 32, 2)]
    boxes = [np.array([[0, 0, 10, 10], [5, 5, 30, 20]]), np.array([[2, 2, 9, 9]]), np.zeros((0, 4))]
    prompts = ["describe the big red region near the road", "describe", "the"]
    batch = processor(chips, boxes=boxes, prompts=prompts).to(device)
    batched = model.generate(**batch, max_new_tokens=8, eos_token_id=None)
    singles = [model.generate(**processor(chips[i], boxes=boxes[i], prompts=prompts[i]).to(device),
                              max_new_tokens=8, eos_token_id=None)[0] for i in range(3)]
    greedy_equal = all(torch.equal(batched[i], singles[i]) for i in range(3))
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        model.save_pretrained(tmp)
        loaded = MGIMMForConditionalGeneration.from_pretrained(tmp).to(device).eval()
        round_trip_equal = torch.equal(model(**batch).logits, loaded(**batch).logits)
        moved = [np.array([[0, 0, 10, 10], [12, 14, 31, 30]])] + boxes[1:]
        tokens = []
        for bx in (boxes, moved):
            b = processor(chips, boxes=bx).to(device)
            tokens.append(model.region_features(model.patch_features(b["pixel_values"]), b["region_boxes"],
                                                None, b["region_valid"], b["pixel_values"]))
        independent = (torch.equal(tokens[0][0], tokens[1][0]) and torch.equal(tokens[0][2], tokens[1][2])
                       and not torch.allclose(tokens[0][1], tokens[1][1]))
    return {"batched_greedy_equals_single": greedy_equal, "save_load_identical_logits": round_trip_equal,
            "moving_a_box_changes_only_its_tokens": independent}


def check_bf16(device, tiny: bool) -> dict:
    """Step 2: the same random weights in fp32 and bf16; error relative to the logits' std."""
    text = {} if tiny else dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                                num_attention_heads=8, num_key_value_heads=8, vocab_size=4096)
    model = tiny_model(seed=5, text_config=text).to(device)
    processor = tiny_processor(model.config)
    batch = processor([random_chip(32, 32), random_chip(32, 32, 1)], boxes=[np.array([[0, 0, 16, 16]])] * 2,
                      prompts=["describe the big red region", "the"]).to(device)
    with torch.no_grad():
        reference = model(**batch).logits.float()
        low = model.to(torch.bfloat16)(**batch).logits.float()
    keep = batch["attention_mask"].bool()
    rel = ((low - reference).abs().max() / reference[keep].std()).item()
    top1 = (low.argmax(-1) == reference.argmax(-1))[keep].float().mean().item()
    return {"bf16_max_error_over_logit_std": rel, "bf16_top1_agreement": top1,
            "bf16_within_tolerance": rel < 0.1 and top1 > 0.9}


def full_size_config(tiny: bool) -> MGIMMConfig:
    if tiny:
        return tiny_model().config
    return MGIMMConfig(text_config=dict(model_type="llama", vocab_size=32064))  # defaults: CLIP-L/336 + LLaMA-7B


def bandwidth_floor_tokens_per_s(weight_bytes, kv_bytes_per_token, batch, context, bandwidth):
    """Decode floor: every step reads all weights once plus each sequence's KV cache."""
    step = (weight_bytes + batch * context * kv_bytes_per_token) / bandwidth
    return batch / step


def measure_bandwidth(device) -> float:
    """Device-to-device copy bandwidth, bytes/s (read + write of a 1 GiB buffer), as a sanity
    check on the nominal figure; on CPU a small buffer."""
    size = (1 << 30) if device.type == "cuda" else (1 << 24)
    src = torch.empty(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = timed(lambda: dst.copy_(src), device)
    return 2 * size / seconds


def compare_naive_batched(model, inputs, device, *, regions: int, batch: int, new_tokens: int, weight_bytes: int,
                          kv_bytes_per_token: int, context: int, bandwidth: float, static: bool) -> dict:
    """Step 4: `regions` region texts of `new_tokens` tokens each (prefill included), three ways:

    - naive: one region at a time, plain HF `generate` (batch 1, dynamic KV cache): what a
      straightforward loop over regions does (timed over regions / 4, rates per region);
    - batched: `batch` regions per `generate` call (what `describe --batch-size` does);
    - batched_static: the same with a static KV cache, which transformers compiles on CUDA
      (`describe --compile`); skipped when static=False.
    Plus decode at batch 1 with the static/compiled cache (ms/token without prefill) against the
    bandwidth floor (weights + KV read once per step). Each way runs once at its shapes first, so
    compile and allocator warm-up are not timed.
    """
    gen = dict(eos_token_id=None)
    one, full = inputs(1), inputs(batch)

    def loop(data, calls, **extra):
        def body():
            for _ in range(calls):
                model.generate(**data, max_new_tokens=new_tokens, **gen, **extra)
        return body

    ways = {"naive": (one, 1, {}), "batched": (full, batch, {})}
    if static:
        ways["batched_static"] = (full, batch, {"cache_implementation": "static"})
    out = {"regions": regions, "batch": batch, "new_tokens": new_tokens}
    for name, (data, per_call, extra) in ways.items():
        # the naive loop times a quarter of the regions (its rate per region is what counts)
        calls = max(1, regions // 4) if per_call == 1 else max(1, regions // per_call)
        seconds = timed(loop(data, calls, **extra), device, repeat=1)
        done = calls * per_call
        out[name] = {"regions_per_s": done / seconds, "tokens_per_s": done * new_tokens / seconds,
                     "seconds": seconds}
    for name in list(ways)[1:]:
        out[f"{name}_over_naive"] = out[name]["regions_per_s"] / out["naive"]["regions_per_s"]
    floor = bandwidth_floor_tokens_per_s(weight_bytes, kv_bytes_per_token, 1, context, bandwidth)
    if static:
        extra = {"cache_implementation": "static"}
        first = timed(lambda: model.generate(**one, max_new_tokens=1, **gen, **extra), device, repeat=2)
        whole = timed(lambda: model.generate(**one, max_new_tokens=1 + new_tokens, **gen, **extra), device, repeat=2)
        ms = 1000 * max(whole - first, 1e-9) / new_tokens
        out["decode_batch1_static"] = {"ms_per_token": ms, "floor_ms_per_token": 1000 / floor,
                                       "times_floor": ms / (1000 / floor)}
    out["floor_tokens_per_s_batch1"] = floor
    out["floor_tokens_per_s_batched"] = bandwidth_floor_tokens_per_s(weight_bytes, kv_bytes_per_token, batch,
                                                                     context, bandwidth)
    return out


def time_full_size(device, tiny: bool, batches, new_tokens: int, bandwidth: float, *, regions: int = 64,
                   region_batch: int = 32, static: bool = True) -> dict:
    """Step 3: prefill and decode timings of a random full-size model in bf16 (fp32 on CPU); then
    step 4 (`compare_naive_batched`) on the same model."""
    config = full_size_config(tiny)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(device):  # initialise on the device: a 7B model is slow to build on CPU
        model = MGIMMForConditionalGeneration(config).eval()
    torch.set_default_dtype(previous)
    model.to(device)  # the few tensors built on CPU on purpose (the Fourier matrix)
    text = config.text_config
    lm_params = sum(p.numel() for p in model.language_model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.language_model.parameters())
    heads_kv = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = text.hidden_size // text.num_attention_heads
    kv_bytes_per_token = 2 * text.num_hidden_layers * heads_kv * head_dim * torch.tensor([], dtype=dtype).element_size()
    size = config.image_size
    prompt_len = 620 if not tiny else 40
    image_tokens = config.num_global_tokens + config.tokens_per_region

    def inputs(batch):
        ids = torch.randint(5, text.vocab_size, (batch, prompt_len), device=device)
        ids[ids == config.image_token_id] = 5  # only the placeholder span may hold image tokens
        ids[:, 1 : 1 + image_tokens] = config.image_token_id
        return dict(
            input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=torch.randn(batch, 3, size, size, device=device),
            region_boxes=torch.tensor([[[10.0, 20.0, size / 2, size / 3]]], device=device).expand(batch, 1, 4),
            region_valid=torch.ones(batch, 1, dtype=torch.bool, device=device),
        )

    results = {"lm_parameters": lm_params, "lm_weight_bytes": weight_bytes, "kv_bytes_per_token": kv_bytes_per_token,
               "prompt_tokens": prompt_len, "bandwidth_bytes_per_s": bandwidth}
    one = inputs(1)
    with torch.inference_mode():
        results["prefill_ms_620_tokens"] = 1000 * timed(lambda: model(**one, logits_to_keep=1), device)
    flops = 2 * lm_params * prompt_len
    results["prefill_tflops_per_s"] = flops / (results["prefill_ms_620_tokens"] / 1000) / 1e12
    decode = {}
    for batch in batches:
        data = inputs(batch)
        gen = dict(eos_token_id=None)
        first = timed(lambda data=data, gen=gen: model.generate(**data, max_new_tokens=1, **gen), device, repeat=1)
        full = timed(lambda data=data, gen=gen: model.generate(**data, max_new_tokens=1 + new_tokens, **gen),
                     device, repeat=1)
        per_s = batch * new_tokens / max(full - first, 1e-9)
        floor = bandwidth_floor_tokens_per_s(weight_bytes, kv_bytes_per_token, batch,
                                             prompt_len + new_tokens // 2, bandwidth)
        decode[batch] = {"tokens_per_s": per_s, "floor_tokens_per_s": floor, "fraction_of_floor": per_s / floor}
        del data
        if device.type == "cuda":
            torch.cuda.empty_cache()
    results["decode"] = decode
    results["naive_vs_batched"] = compare_naive_batched(
        model, inputs, device, regions=regions, batch=region_batch, new_tokens=new_tokens, weight_bytes=weight_bytes,
        kv_bytes_per_token=kv_bytes_per_token, context=prompt_len + new_tokens // 2, bandwidth=bandwidth,
        static=static)
    if device.type == "cuda":
        results["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (runs on CPU in seconds)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--batches", default="1,32,128", help="decode batch sizes")
    parser.add_argument("--new-tokens", type=int, default=64, help="decode tokens timed per batch")
    parser.add_argument("--bandwidth", type=float, default=H200_BANDWIDTH, help="nominal bytes/s for the floor")
    parser.add_argument("--regions", type=int, default=64, help="regions described in step 4 (naive: a quarter)")
    parser.add_argument("--region-batch", type=int, default=32, help="regions per generate call in step 4")
    parser.add_argument("--no-static", action="store_true", help="skip the static-cache / compiled decode runs")
    parser.add_argument("--out", default=None, help="write results as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.tiny:
        print("no CUDA device: run with --tiny to exercise the script on CPU", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in the comparisons
    batches = [int(b) for b in args.batches.split(",")] if not args.tiny else [1, 4]
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__}
    results["equivalence"] = check_equivalence(device)
    results["bf16"] = check_bf16(device, args.tiny)
    results["measured_copy_bandwidth_bytes_per_s"] = measure_bandwidth(device)
    new_tokens = args.new_tokens if not args.tiny else 4
    regions, region_batch = (8, 4) if args.tiny else (args.regions, args.region_batch)
    results["timing"] = time_full_size(device, args.tiny, batches, new_tokens, args.bandwidth, regions=regions,
                                       region_batch=region_batch, static=not args.no_static)
    print(json.dumps(results, indent=2, default=str))
    t = results["timing"]
    print(f"\nprefill {t['prompt_tokens']} tokens: {t['prefill_ms_620_tokens']:.1f} ms "
          f"({t['prefill_tflops_per_s']:.0f} TFLOP/s)")
    print("| batch | decode tokens/s | bandwidth floor tokens/s | fraction |\n|---|---|---|---|")
    for batch, row in t["decode"].items():
        print(f"| {batch} | {row['tokens_per_s']:.0f} | {row['floor_tokens_per_s']:.0f} | {row['fraction_of_floor']:.2f} |")
    n = t["naive_vs_batched"]
    print(f"\n{n['regions']} regions x {n['new_tokens']} tokens (prefill included)\n"
          "| way | regions/s | tokens/s | x naive |\n|---|---|---|---|")
    for name in ("naive", "batched", "batched_static"):
        if name in n:
            print(f"| {name} | {n[name]['regions_per_s']:.2f} | {n[name]['tokens_per_s']:.0f} | "
                  f"{n.get(name + '_over_naive', 1.0):.1f} |")
    if "decode_batch1_static" in n:
        d = n["decode_batch1_static"]
        print(f"decode batch 1, static cache: {d['ms_per_token']:.2f} ms/token = {d['times_floor']:.2f} x the "
              f"bandwidth floor ({d['floor_ms_per_token']:.2f} ms)")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2, default=str)
    ok = all(results["equivalence"].values()) and results["bf16"]["bf16_within_tolerance"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
