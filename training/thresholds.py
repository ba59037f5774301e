"""Choose a model's "no distinct objects" thresholds on the benchmark's dev splits (never a test split).

    python -m training.thresholds --model runs/v3c/model --split dev-v3 [--split dev] --scenes 8 [--write]

Two thresholds on the model's probability of the "no distinct objects" answer, both read from one
run of the benchmark's describe runs (free decoding; every split given, pooled):

- guides (`guide_no_object_probability`): a guide object is confirmed where that probability around
  it (`guide_no_object_p`, mgimm_core/steps.py `judge_guides`) is at most the threshold and its own
  answer names an object. Chosen: the most true guides confirmed while at most `--target` of the
  guides put on empty land are.
- regions (`no_object_probability`): a region's attribute answer may say "no distinct objects" only
  where the model gives its first word at least the threshold (`no_object_p`, mgimm_core/steps.py
  `ask_attributes`); below, that word is forbidden and the model names what it sees. The run is made
  without a floor (the folder's own is set aside), so each candidate's "none" answers are those the
  model gave with at least that probability. Chosen: the highest F1 of the "none" answers against
  the truth (empty AOIs), the lowest threshold among equals.

`--write` stores both in the model folder's mgimm_processor.json, where the describer reads them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from training.benchmark import SPLITS, TEST_SPLITS, benchmark_tallies

#: Guide thresholds tried (the probability of the "no distinct objects" answer), on a log scale.
CANDIDATES = tuple(sorted({round(10 ** (e / 4), 8) for e in range(-32, 1)}))


def confirmed_share(guides: list[tuple[str, float | None, bool]], kind: str, threshold: float) -> float | None:
    """The share of guides of `kind` confirmed at `threshold` (None: no guide of that kind)."""
    of_kind = [(p, said_none) for k, p, said_none in guides if k == kind and p is not None]
    if not of_kind:
        return None
    return sum(p <= threshold and not said_none for p, said_none in of_kind) / len(of_kind)


def curve(guides: list[tuple[str, float | None, bool]]) -> list[dict]:
    """Per candidate threshold, the confirmed share of true, shifted and empty-land guides."""
    return [{"threshold": t, **{kind: confirmed_share(guides, kind, t) for kind in ("true", "shifted", "empty_land")}}
            for t in CANDIDATES]


def choose(points: list[dict], target: float) -> dict:
    """The point with the most true guides confirmed among those confirming at most `target` of the
    guides on empty land (the lowest threshold among equals)."""
    allowed = [p for p in points if (p["empty_land"] or 0.0) <= target and p["true"] is not None]
    if not allowed:
        raise SystemExit(f"no threshold keeps guides on empty land at or under {target}: lower --target's "
                         f"ambition or retrain the model (docs/demo_v3.md)")
    return max(allowed, key=lambda p: (p["true"], -p["threshold"]))


#: Region floors tried (the probability of the answer's first word "no").
FLOORS = (0.0, *(round(k / 20, 2) for k in range(1, 20)), 0.97, 0.98, 0.99)


def none_answers(answers: list[tuple[float | None, bool, bool]], floor: float) -> dict:
    """Precision, recall and F1 of the "none" answers against empty AOIs at `floor`: an answer the
    model gave "none" stays "none" where its probability is at least the floor."""
    measured = [(p, said, empty) for p, said, empty in answers if p is not None]
    said = [(said and p >= floor, empty) for p, said, empty in measured]
    right = sum(s and e for s, e in said)
    n_said, n_empty = sum(s for s, _ in said), sum(e for _, e in said)
    precision = right / n_said if n_said else None
    recall = right / n_empty if n_empty else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return {"floor": floor, "precision": precision, "recall": recall, "f1": f1, "said": n_said}


def choose_floor(answers: list[tuple[float | None, bool, bool]]) -> tuple[dict, list[dict]]:
    """The floor with the highest F1 of "none" answers (the lowest among equals), and every point."""
    if all(p is None for p, _, _ in answers):
        raise SystemExit("the model measured no \"no distinct objects\" probability on these regions (a model "
                         "without region tokens has no floor to choose)")
    points = [none_answers(answers, floor) for floor in FLOORS]
    return max(points, key=lambda p: (p["f1"], -p["floor"])), points


def without_floor(model: str, directory: Path) -> Path:
    """A view of the model folder (links to its files) whose processor settings have no region floor,
    so the dev run sees every "none" answer the model would give."""
    source = Path(model)
    for item in source.iterdir():
        if item.name != "mgimm_processor.json":
            (directory / item.name).symlink_to(item.resolve())
    settings = json.loads((source / "mgimm_processor.json").read_text())
    settings.pop("no_object_probability", None)
    (directory / "mgimm_processor.json").write_text(json.dumps(settings, indent=2) + "\n")
    return directory


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--split", action="append", choices=sorted(set(SPLITS) - set(TEST_SPLITS)),
                        help="a dev split, repeatable (default dev-v3; test splits are refused: nothing is "
                             "tuned on them)")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--target", type=float, default=0.08,
                        help="the highest share of guides on empty land to confirm (the benchmark's target is 0.10)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the curves as JSON here")
    parser.add_argument("--write", action="store_true", help="store the chosen thresholds in the model folder")
    args = parser.parse_args(argv)
    if not (Path(args.model) / "mgimm_processor.json").is_file():
        parser.error(f"--model {args.model}: no mgimm_processor.json there; give an MGIMM model folder "
                     f"(as `python -m training demo --export` writes it)")
    guides, answers, runs = [], [], []
    with tempfile.TemporaryDirectory(prefix="thresholds_") as view:
        model = without_floor(args.model, Path(view))
        for split in args.split or ["dev-v3"]:
            meta, tallies = benchmark_tallies(str(model), split=split, scenes=args.scenes, decodings=("free",),
                                              threads=args.threads)
            guides += tallies["free"].guides
            answers += tallies["free"].answers
            runs.append({**meta, "model": args.model})
    points = curve(guides)
    best = choose(points, args.target)
    floor, floors = choose_floor(answers)
    counts = {kind: sum(k == kind for k, _, _ in guides) for kind in ("true", "shifted", "empty_land")}
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": runs, "guides": counts, "chosen": best, "curve": points,
                                              "regions": len(answers), "chosen_floor": floor, "floors": floors},
                                             indent=2) + "\n")
    print(f"guides: {counts}")
    print("| threshold | true confirmed | shifted confirmed | on empty land confirmed |\n|---|---|---|---|")
    for p in points:
        print("| " + " | ".join("-" if v is None else f"{v:.3g}" for v in p.values()) + " |")
    print(f"chosen guide threshold: {best}")
    print(f"regions: {len(answers)}, empty {sum(e for _, _, e in answers)}")
    print("| floor | \"none\" precision | recall | F1 | \"none\" answers |\n|---|---|---|---|---|")
    for p in floors:
        print("| " + " | ".join("-" if v is None else f"{v:.3g}" for v in p.values()) + " |")
    print(f"chosen region floor: {floor}")
    if args.write:
        path = Path(args.model) / "mgimm_processor.json"
        settings = json.loads(path.read_text())
        settings["guide_no_object_probability"] = best["threshold"]
        settings["no_object_probability"] = floor["floor"]
        path.write_text(json.dumps(settings, indent=2) + "\n")
        print(f"wrote guide_no_object_probability = {best['threshold']} and no_object_probability = "
              f"{floor['floor']} to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
