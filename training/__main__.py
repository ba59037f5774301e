"""`python -m training`: train MGIMM.

    python -m training demo --out runs/demo [--preset full|smoke] [--export DIR] [--resume]
        [--variant two_stage|description_only|global_only]
    python -m training train CONFIG.yaml [--resume]     # a stage on reference-format data
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description="Train MGIMM models.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the shipped demo model's recipe on the synthetic world")
    demo.add_argument("--out", required=True, help="run folder (data cache, checkpoints, logs, metrics)")
    demo.add_argument("--preset", default="full", help="full (about an hour on 2 CPU cores) or smoke")
    demo.add_argument("--export", default=None, help="save the trained model here (e.g. mgimm_core/demo_model)")
    demo.add_argument("--variant", default="two_stage",
                      choices=["two_stage", "description_only", "global_only"])
    demo.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoints")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a preset field, e.g. --set stage2_steps=500")
    stage = sub.add_parser("train", help="one training stage from a YAML config")
    stage.add_argument("config")
    stage.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "demo":
        from training.demo_recipe import PRESETS, run_demo

        if args.preset not in PRESETS:
            parser.error(f"--preset {args.preset!r}: choose one of {', '.join(PRESETS)}")
        preset = PRESETS[args.preset]
        for item in args.set:
            key, _, value = item.partition("=")
            if not hasattr(preset, key):
                parser.error(f"--set {item!r}: unknown field {key!r}")
            preset = replace(preset, **{key: type(getattr(preset, key))(value)})
        metrics = run_demo(args.out, preset, export=args.export, resume=args.resume, variant=args.variant)
        summary = {k: metrics[k] for k in ("attributes", "captions", "stages", "timings") if k in metrics}
        print(json.dumps(summary, indent=2))
        return 0
    from training.train import run_config

    print(json.dumps(run_config(args.config, resume=args.resume), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
