"""Is model B better than model A on the same benchmark scenes? A paired bootstrap over scenes.

    python -m training.compare A.json B.json [--decoding free] [--resamples 2000] [--out diff.json]

A and B are `python -m training.benchmark --out` reports of two models on the same split and
seeds. Every figure is recomputed from the scenes' own counts (`scene_counts`), then the scenes
are resampled with replacement, the same draw for both models (they saw the same AOIs), and the
difference B - A is read off each resample: its 2.5 and 97.5 percentiles are the 95% interval. A
figure "differs" only where that interval leaves out 0. Scenes, not AOIs, are resampled because
the AOIs of one scene share its look (GSD, gray or RGB, crowds), so they are not independent draws.

Why: dev splits of 8-16 scenes hold 40-70 single-object AOIs, where one AOI moves a rate by
0.015-0.025; the v3h and v3i trials (docs/demo_v3.md) read gains on dev that did not hold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mgimm_core.errors import MGIMMError
from training.benchmark import ROWS, Tally, report

#: Figures where lower is better (the rest: higher is better).
LOWER_IS_BETTER = frozenset({
    "invented_objects", "doubled_words", "broken_phrases", "repeated_clauses", "repeated_list_items",
    "doubled_phrases", "cover_invented",
    "neighbour_described", "guides_shifted_confirmed", "guides_empty_land_confirmed",
    "empty_with_guide_described_object",
})
#: The rates of the benchmark's table (ROWS), without its plain counts.
FIGURES = tuple(key for _, keys, _ in ROWS for key in keys if not key.startswith("counts_given"))


class CompareError(MGIMMError, ValueError):
    """Two reports that cannot be compared scene by scene; the message names the file and the fix."""

    code = "reports_not_comparable"


def scene_counts(path: str | Path, decoding: str) -> dict[str, dict]:
    """The per-scene counts of one decoding of a benchmark report."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CompareError(f"{path}: cannot be read ({exc.strerror}); give the --out file of a benchmark run") from exc
    try:
        result = json.loads(text)
        counts = result["results"][decoding].get("scene_counts")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CompareError(f"{path}: not a benchmark report with a {decoding!r} decoding ({exc}); "
                           "write one with python -m training.benchmark --out") from exc
    if not counts:
        raise CompareError(f"{path}: the report has no per-scene counts (written before they were kept); "
                           "run python -m training.benchmark again for it")
    return dict(counts)


def scene_resamples(scenes: int, resamples: int, seed: int = 0):
    """`resamples` draws of scene indices with replacement, the same draws for every caller with the
    same seed: paired comparisons resample the scenes both sides saw, not their AOIs."""
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield rng.integers(0, scenes, scenes)


def interval_verdict(draws: list[float], *, lower_is_better: bool = False) -> tuple[list[float], str]:
    """The 95% interval of resampled differences B - A, and whether it leaves out 0 on either side."""
    low, high = (float(v) for v in np.percentile(draws, [2.5, 97.5]))
    above, below = low > 0, high < 0          # the whole interval on one side of 0
    if not (above or below):
        verdict = "no clear difference"
    else:
        verdict = "B better" if below == lower_is_better else "B worse"
    return [round(low, 4), round(high, 4)], verdict


def compare(a: dict[str, dict], b: dict[str, dict], *, resamples: int = 2000, seed: int = 0,
            names: tuple[str, str] = ("A", "B")) -> dict:
    """Per figure: A's and B's value, B - A, the 95% interval of B - A over scene resamples, and
    how many resamples had the figure defined (a rare AOI kind may be missing from some)."""
    if set(a) != set(b):
        raise CompareError(f"{names[0]} and {names[1]} cover different scenes ({len(a)} and {len(b)} seeds, "
                           f"{len(set(a) ^ set(b))} not shared): run both on the same --split and --scenes")
    seeds = sorted(a)
    a_scenes, b_scenes = [a[s] for s in seeds], [b[s] for s in seeds]
    whole_a, whole_b = report(Tally.from_scenes(a_scenes)), report(Tally.from_scenes(b_scenes))
    draws: dict[str, list[float]] = {key: [] for key in FIGURES}
    for picked in scene_resamples(len(seeds), resamples, seed):
        ra = report(Tally.from_scenes([a_scenes[i] for i in picked]))
        rb = report(Tally.from_scenes([b_scenes[i] for i in picked]))
        for key in FIGURES:
            if ra.get(key) is not None and rb.get(key) is not None:
                draws[key].append(rb[key] - ra[key])
    out = {}
    for key in FIGURES:
        va, vb = whole_a.get(key), whole_b.get(key)
        if va is None or vb is None or not draws[key]:
            out[key] = {"a": va, "b": vb, "difference": None, "interval": None, "verdict": "not measured"}
            continue
        interval, verdict = interval_verdict(draws[key], lower_is_better=key in LOWER_IS_BETTER)
        out[key] = {"a": va, "b": vb, "difference": round(vb - va, 4), "interval": interval,
                    "verdict": verdict, "resamples": len(draws[key])}
    return {"scenes": len(seeds), "resamples": resamples, "figures": out}


def markdown(result: dict, a_name: str, b_name: str) -> str:
    lines = [f"| figure ({result['scenes']} scenes) | A: {a_name} | B: {b_name} | B - A | 95% interval | |",
             "|---|---|---|---|---|---|"]
    for key, f in result["figures"].items():
        interval = "-" if f["interval"] is None else f"{f['interval'][0]} .. {f['interval'][1]}"
        lines.append(f"| {key} | {f['a']} | {f['b']} | {f['difference']} | {interval} | {f['verdict']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", help="benchmark report of model A (the baseline)")
    parser.add_argument("b", help="benchmark report of model B, on the same split and scenes")
    parser.add_argument("--decoding", choices=("free", "agree"), default="free")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the comparison as JSON here too")
    args = parser.parse_args(argv)
    if args.resamples < 100:
        parser.error(f"--resamples {args.resamples}: at least 100 (the interval is read from their percentiles)")
    try:
        result = compare(scene_counts(args.a, args.decoding), scene_counts(args.b, args.decoding),
                         resamples=args.resamples, seed=args.seed, names=(args.a, args.b))
        if args.out:
            try:
                Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
            except OSError as exc:
                raise CompareError(f"--out {args.out}: cannot be written ({exc.strerror}); give a path in a "
                                   "folder you can write to") from exc
    except CompareError as exc:
        print(f"python -m training.compare: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(result, Path(args.a).name, Path(args.b).name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
