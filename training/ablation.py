"""The paper's ablation at demo scale: two-stage vs description-stage-only vs global-only.

    python -m training ablation --out runs/ablation                 # all three, one after another
    python -m training ablation --out runs/ablation --parallel 2    # two at a time, a thread each
    python -m training ablation --out runs/ablation --reuse two_stage=mgimm_core/demo_model

Every variant trains on the same generated examples (generated once into `OUT/data`), with the same
preset, seeds and number of optimiser steps of the same batch size (equal compute in samples), and
is scored on the same held-out scenes. Each variant is a `python -m training demo --variant V` run
in `OUT/V`, so a variant that finished is not run again. `--reuse V=DIR` scores an already trained
model (for example the shipped demo model, trained by the very same recipe) instead of training V.
The table goes to `OUT/ablation.md` (and `--report FILE`), the numbers to `OUT/ablation.json`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from training.demo_recipe import HELDOUT_SEED_BASE, DemoPreset, evaluate_demo, load_or_build

log = logging.getLogger(__name__)


class AblationError(RuntimeError):
    """A variant's training run failed; its log says why."""

VARIANTS = ("two_stage", "description_only", "global_only")
VARIANT_TEXT = {
    "two_stage": "two-stage (stage 1 regions, then stage 2 descriptions from global + region tokens)",
    "description_only": "description stage only (global + region tokens, no stage 1)",
    "global_only": "global-only (two stages, descriptions from global tokens alone)",
}


def preset_overrides(preset: DemoPreset) -> list[str]:
    """The preset as `--set KEY=VALUE` arguments for a `python -m training demo` child run."""
    return [f"--set={f.name}={getattr(preset, f.name)}" for f in fields(preset)]


def variant_command(variant: str, out: Path, preset: DemoPreset) -> list[str]:
    """The child run of one variant; it exports its model to OUT/V/model, so the variant can be
    described afterwards like any model (`python -m training.agreement --model OUT/V/model`)."""
    return [sys.executable, "-m", "training", "demo", "--variant", variant, "--out", str(out / variant),
            "--data", str(out / "data"), "--export", str(out / variant / "model"), *preset_overrides(preset)]


def build_shared_data(out: Path, preset: DemoPreset) -> float:
    """Generate the examples every variant uses unless already there; seconds it took."""
    start = time.perf_counter()
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split in ("train", "heldout"):
        load_or_build(data, split, preset, load=False)
    return round(time.perf_counter() - start, 1)


def score_trained(model_dir: Path, variant: str, out: Path, preset: DemoPreset) -> dict:
    """Metrics of an already trained model on the ablation's held-out examples (for --reuse)."""
    import torch

    from mgimm_core.model.generation_mgimm import load_for_inference

    torch.set_num_threads(preset.threads)
    heldout = load_or_build(out / "data", "heldout", preset)
    model, processor = load_for_inference(model_dir, device="cpu")
    describe_mode = "global" if variant == "global_only" else "global_region"
    metrics = evaluate_demo(model, processor, heldout, preset, describe_mode=describe_mode)
    trained = json.loads((model_dir / "metrics.json").read_text()) if (model_dir / "metrics.json").exists() else {}
    differs = training_differences(trained.get("preset", {}), preset)
    if differs:
        log.warning("%s was trained with other settings than this ablation (%s): not equal compute",
                    model_dir, ", ".join(differs))
    metrics.update(variant=variant, reused_from=str(model_dir), stages=trained.get("stages", {}),
                   preset=trained.get("preset", {}), preset_differs=differs)
    return metrics


# Preset fields that change what a model learns (threads and evaluation sizes do not).
TRAINING_FIELDS = ("train_scenes", "scene_size", "descriptions_per_scene", "object_descriptions_per_scene",
                   "model_input", "batch_size",
                   "stage1_steps", "stage1_lr", "stage2_steps", "stage2_lr", "stage2_region_every", "seed")


# What a model trained before a preset field existed was trained with.
FIELDS_BEFORE_THEY_EXISTED = {"object_descriptions_per_scene": 0}


def training_differences(trained_preset: dict, preset: DemoPreset) -> list[str]:
    """Training settings of a reused model that differ from the ablation's (or are unknown)."""
    if not trained_preset:
        return ["unknown training settings"]
    trained = {**FIELDS_BEFORE_THEY_EXISTED, **trained_preset}
    return [f"{k}={trained.get(k)} (ablation {getattr(preset, k)})" for k in TRAINING_FIELDS
            if trained.get(k) != getattr(preset, k)]


def run_ablation(out: str | Path, preset: DemoPreset, *, variants=VARIANTS, parallel: int = 1,
                 reuse: dict[str, Path] | None = None, report: Path | None = None) -> dict:
    """Train (or reuse) and score each variant; write the comparison table."""
    out = Path(out)
    reuse = reuse or {}
    data_seconds = build_shared_data(out, preset)
    pending = [v for v in variants if v not in reuse and not (out / v / "metrics.json").exists()]
    threads = max(1, preset.threads // max(1, min(parallel, len(pending) or 1)))
    child_preset = DemoPreset(**{**asdict(preset), "threads": threads})
    running: list[tuple[str, subprocess.Popen]] = []
    failed = []
    for variant in pending + [None]:
        while running and (variant is None or len(running) >= parallel):
            name, proc = running.pop(0)
            if proc.wait() != 0:
                failed.append(name)
        if variant is None:
            break
        (out / variant).mkdir(parents=True, exist_ok=True)
        log.info("training variant %s (%d threads) -> %s", variant, threads, out / variant)
        with (out / variant / "train.log").open("ab") as logfile:
            running.append((variant, subprocess.Popen(variant_command(variant, out, child_preset),
                                                      stdout=logfile, stderr=subprocess.STDOUT)))
    if failed:
        raise AblationError(f"variant(s) {', '.join(failed)} failed: see "
                            + ", ".join(str(out / name / "train.log") for name in failed)
                            + "; fix the cause and rerun the same command (finished variants are kept)")
    results = {}
    for variant in variants:
        path = out / variant / "metrics.json"
        if variant in reuse:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(score_trained(Path(reuse[variant]), variant, out, preset), indent=2))
        results[variant] = json.loads(path.read_text())
    summary = {"preset": asdict(preset), "data_seconds": data_seconds, "variants": results}
    (out / "ablation.json").write_text(json.dumps(summary, indent=2))
    table = ablation_table(results, preset)
    (out / "ablation.md").write_text(table)
    if report:
        Path(report).write_text(table)
    return summary


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def ablation_table(results: dict, preset: DemoPreset) -> str:
    """The comparison as a Markdown table, one row a variant."""
    head = ("| variant | steps (stage 1 + stage 2) | train min | name | colour | shape | size | "
            "BLEU-4 | METEOR | ROUGE-L | CIDEr |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for variant, m in results.items():
        stages = m.get("stages", {})
        steps = " + ".join(str(stages.get(s, {}).get("steps", 0)) for s in ("stage1", "stage2"))
        minutes = sum(s.get("seconds", 0) for s in stages.values()) / 60
        attrs, caps = m.get("attributes", {}), m.get("captions", {})
        tag = ""
        if m.get("reused_from"):
            tag = " (reused, other settings!)" if m.get("preset_differs") else " (reused)"
        rows.append(f"| {variant}{tag} | {steps} | {minutes:.1f} | "
                    + " | ".join(_fmt(attrs.get(k)) for k in ("name", "color", "shape", "size")) + " | "
                    + " | ".join(_fmt(caps.get(k)) for k in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")) + " |")
    legend = "\n".join(f"- `{v}`: {VARIANT_TEXT[v]}" for v in results if v in VARIANT_TEXT)
    return (f"{head}{chr(10).join(rows)}\n\n{legend}\n\nBatch {preset.batch_size}; "
            f"{preset.train_scenes} training scenes, {preset.heldout_scenes} held-out scenes "
            f"(seeds from {HELDOUT_SEED_BASE}); attribute accuracy on held-out region queries, caption "
            f"metrics (pycocoevalcap) on up to {preset.eval_descriptions} held-out descriptions.\n")
