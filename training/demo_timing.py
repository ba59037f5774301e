"""Measure a demo preset's cost in minutes, not hours: `python -m training.demo_timing --preset v3`.

Generates the data of `--scenes` training scenes (timed per scene), builds the preset's model, runs
`--steps` stage-1 steps and `--steps` stage-2 steps (mixed batches, as the recipe) on them, and
extrapolates the full recipe: data = seconds per scene x train_scenes / threads, training = seconds
per step x the preset's steps. Prints JSON. Nothing is saved; the shipped demo model is not touched.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from training.demo_recipe import (PRESETS, batch_maker, build_dataset, demo_architecture, mixed_batch_maker,
                                  prepare_for_training, run_stage)
from training.loop import seed_everything


def measure(preset_name: str, scenes: int, steps: int, threads: int) -> dict:
    from training.demo_model import build_demo

    full = PRESETS[preset_name]
    preset = dataclasses.replace(full, threads=threads)
    torch.set_num_threads(threads)
    seed_everything(preset.seed)
    t = time.perf_counter()
    examples = build_dataset(list(range(1, scenes + 1)), preset, processes=1)
    data_s = time.perf_counter() - t
    regions = [e for e in examples if e.kind == "region"]
    descriptions = [e for e in examples if e.kind == "description"]
    t = time.perf_counter()
    model, processor = build_demo([e.answer for e in examples], gsd_prompt=preset.gsd_prompt,
                                  **demo_architecture(preset))
    build_s = time.perf_counter() - t
    prepare_for_training(model, processor, preset)
    out = Path(tempfile.mkdtemp(prefix="demo_timing_"))
    bs = preset.batch_size
    s1 = run_stage(model, processor, "stage1", batch_maker(processor, regions, "region", bs, 1), steps,
                   preset.stage1_lr, out, preset, False)
    mixed = mixed_batch_maker(batch_maker(processor, descriptions, "global_region", bs, 2),
                              batch_maker(processor, regions, "region", bs, 3), preset.stage2_region_every)
    s2 = run_stage(model, processor, "stage2", mixed, steps, preset.stage2_lr, out, preset, False)
    per1, per2 = s1["seconds"] / steps, s2["seconds"] / steps
    train_min = (per1 * full.stage1_steps + per2 * full.stage2_steps) / 60
    data_min = data_s / scenes * (full.train_scenes + full.heldout_scenes) / max(1, full.threads) / 60
    return {"preset": preset_name, "threads": threads, "vision": preset.vision, "scenes": scenes,
            "examples": {"region": len(regions), "description": len(descriptions)},
            "data_s_per_scene": round(data_s / scenes, 2), "build_model_s": round(build_s, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "stage1_s_per_step": round(per1, 3), "stage2_s_per_step": round(per2, 3),
            "stage1_final_loss": s1["final_loss"], "stage2_final_loss": s2["final_loss"],
            "full_recipe_estimate_min": {"data": round(data_min, 1), "training": round(train_min, 1),
                                         "steps": [full.stage1_steps, full.stage2_steps],
                                         "train_scenes": full.train_scenes, "threads": full.threads}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.demo_timing", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="v3", choices=sorted(PRESETS))
    p.add_argument("--scenes", type=int, default=12)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    json.dump(measure(a.preset, a.scenes, a.steps, a.threads), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
