"""Do descriptions agree with their own attributes? Measured on tuning scenes (seeds 1,000,500+: never trained on, but the agreeing decoding was tuned on them), on the product path.

    python -m training.agreement [--model DIR] [--scenes 8] [--out agreement.json]

Each tuning scene (seeds never used in training, training/demo_recipe.py; tuned on, so not held out: training/benchmark.py has the test split) is written as a
GeoTIFF with its ground-truth footprints, and described with `mgimm_core.describe` exactly as a
user would run `mgimm-geo describe`:

- object AOIs (a polygon drawn around one object, a little larger than it): the contradiction
  rate, rows whose description names the row's own attribute object with another class, colour or
  shape, or not at all (target <= 5%);
- empty AOIs (squares no object touches): how often the attribute answer says "no distinct object"
  (target >= 90%);
- tiles, unguided and guided by the ground-truth footprints (`--guide`): object recall and
  precision of the classes a description names, hallucinated classes, and whether the count it
  gives ("three buildings") is right.

These scenes are tuning data: the agreeing decoding was developed on their figures, and the
contradiction rate is read by the same text reader it enforces. Quality against the truth, on a
frozen test split never tuned on, is training/benchmark.py (docs/benchmark.md).

Reports JSON (and prints a Markdown table). Text is read as mgimm_core/mentions.py reads it (the
same reading the agreeing decoding uses): a class is "named" when its singular or plural form is in
the text; a mention "carries" a colour/shape when that word is among the four words before it.
`--no-agree` describes with free decoding (LoadOptions.agree=False), the baseline of the agreeing
decoding. "description class right" says how often the description names the object truly there.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import shapely
from shapely import affinity

from mgimm_core.mentions import contradicts, mentions
from mgimm_core.vocabulary import NO_OBJECT_VALUE

def tile_scores(description: str, truth: Counter) -> dict:
    """Recall / precision / hallucinations / counts of one tile description against its objects."""
    mentioned: dict[str, int] = {}
    for mention in mentions(description):
        mentioned.setdefault(mention.name, mention.count)
    true_positive = [n for n in mentioned if truth.get(n)]
    counted = [n for n in true_positive if mentioned[n] >= 0]
    return {"truth": len(truth), "mentioned": len(mentioned), "hit": len(true_positive),
            "hallucinated": len(mentioned) - len(true_positive),
            "counted": len(counted), "count_right": sum(mentioned[n] == truth[n] for n in counted)}


def _rate(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def scene_inputs(seed: int, directory: Path, *, size: int, objects: int, empties: int):
    """scene.tif, truth.gpkg and aoi.geojson (object AOIs + empty squares) of one tuning scene."""
    import pyproj

    from training.synthetic.export import write_geotiff, write_objects
    from training.synthetic.scene import generate_scene

    directory.mkdir(parents=True, exist_ok=True)
    scene = generate_scene(seed, size=size)
    write_geotiff(scene, directory / "scene.tif")
    write_objects(scene, directory / "truth.gpkg")
    t = scene.transform
    to_crs = [t.a, t.b, t.d, t.e, t.c, t.f]
    rng = np.random.default_rng([seed, 11])
    features = []
    for index in rng.permutation(len(scene.objects))[:objects]:
        obj = scene.objects[int(index)]
        minx, miny, maxx, maxy = obj.footprint.bounds
        pad = max(maxx - minx, maxy - miny) * float(rng.uniform(0.1, 0.4))
        square = shapely.box(minx - pad, miny - pad, maxx + pad, maxy + pad)
        features.append({"type": "Feature", "properties": {"id": f"object-{obj.id}", "kind": "object",
                                                           "truth_name": obj.name},
                         "geometry": shapely.geometry.mapping(affinity.affine_transform(square, to_crs))})
    tree = shapely.STRtree([o.footprint for o in scene.objects])
    h, w = scene.size
    for i in range(empties * 10):
        if sum(f["properties"]["kind"] == "empty" for f in features) >= empties:
            break
        side = int(rng.integers(48, 160))
        x0, y0 = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
        square = shapely.box(x0, y0, x0 + side, y0 + side)
        if len(tree.query(square)):
            continue
        features.append({"type": "Feature", "properties": {"id": f"empty-{i}", "kind": "empty"},
                         "geometry": shapely.geometry.mapping(affinity.affine_transform(square, to_crs))})
    epsg = pyproj.CRS.from_user_input(scene.crs).to_epsg()   # the AOIs are in the scene's CRS
    (directory / "aoi.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features,
                                                       "crs": {"type": "name", "properties": {"name": f"EPSG:{epsg}"}}}))
    return scene


def evaluate_agreement(model=None, *, scenes: int = 8, size: int = 1024, objects: int = 12, empties: int = 6,
                       tile_size: int = 256, workdir: str | None = None, max_new_tokens: int = 160,
                       agree: bool = True) -> dict:
    """The agreement figures of `model` (a directory; None: the demo model) on the tuning scenes (not held out)."""
    import mgimm_core
    from training.demo_recipe import HELDOUT_SEED_BASE
    from training.synthetic.text import objects_in

    engine = mgimm_core.load_model(model, max_new_tokens=max_new_tokens, agree=agree)
    work = Path(workdir or tempfile.mkdtemp(prefix="agreement_"))
    object_rows, empty_rows, tiles = [], [], {"unguided": [], "guided": []}
    try:
        for k in range(scenes):
            seed = HELDOUT_SEED_BASE + 500 + k
            directory = work / f"scene_{seed}"
            scene = scene_inputs(seed, directory, size=size, objects=objects, empties=empties)
            rows = mgimm_core.describe(str(directory / "scene.tif"), str(directory / "aoi.geojson"), model=engine)
            for _, row in rows.iterrows():
                if row.get("error"):
                    continue
                if row["kind"] == "object":
                    object_rows.append({"description": row["description"], "attribute_text": None,
                                        "attributes": {"object": row["object"], "color": row["color"],
                                                       "shape": row["shape"]},
                                        "truth": row["truth_name"]})
                else:
                    empty_rows.append({"object": row["object"], "no_object": row["object"] == NO_OBJECT_VALUE})
            for mode in ("unguided", "guided"):
                guide = str(directory / "truth.gpkg") if mode == "guided" else None
                frame = mgimm_core.describe(str(directory / "scene.tif"), tiles=True, tile_size=tile_size,
                                            model=engine, guide=guide, min_valid=0.5)
                grid_cols = int(np.ceil(scene.size[1] / tile_size))
                for _, row in frame.iterrows():
                    if row.get("error") or row["description"] is None:
                        continue
                    r, c = divmod(int(row["tile_index"]), grid_cols)
                    window = (c * tile_size, r * tile_size, tile_size, tile_size)
                    truth = Counter(o.name for o in objects_in(scene.objects, window))
                    tiles[mode].append(tile_scores(row["description"], truth))
    finally:
        engine.close()
    named = [r for r in object_rows if r["attributes"]["object"] not in (None, NO_OBJECT_VALUE)]
    contradictions = [r for r in named if contradicts(r["description"], r["attributes"])]
    report = {
        "model": str(model or "demo"), "agree": agree, "scenes": scenes, "object_regions": len(object_rows),
        "contradiction_rate": _rate(len(contradictions), len(named)),
        "object_regions_without_object_answer": len(object_rows) - len(named),
        "attribute_class_right": _rate(sum(r["attributes"]["object"] == r["truth"] for r in object_rows),
                                       len(object_rows)),
        "description_class_right": _rate(sum(any(m.name == r["truth"] for m in mentions(r["description"]))
                                             for r in object_rows), len(object_rows)),
        "empty_regions": len(empty_rows),
        "no_object_right": _rate(sum(1 for r in empty_rows if r["no_object"]), len(empty_rows)),
        "examples_contradicting": [{"attributes": r["attributes"], "description": r["description"]}
                                   for r in contradictions[:4]],
    }
    for mode, scores in tiles.items():
        total = {k: sum(s[k] for s in scores) for k in ("truth", "mentioned", "hit", "hallucinated", "counted",
                                                         "count_right")}
        report[f"tiles_{mode}"] = {
            "tiles": len(scores), "recall": _rate(total["hit"], total["truth"]),
            "precision": _rate(total["hit"], total["mentioned"]),
            "hallucinated_per_tile": _rate(total["hallucinated"], len(scores)),
            "counts_right": _rate(total["count_right"], total["counted"])}
    return report


def markdown(report: dict) -> str:
    lines = ["| figure | value | target |", "|---|---|---|",
             f"| contradiction rate (object AOIs, {report['object_regions']}) | {report['contradiction_rate']} | <= 0.05 |",
             f"| attribute class right (object AOIs) | {report['attribute_class_right']} | |",
             f"| description names the true class (object AOIs) | {report['description_class_right']} | |",
             f"| \"no distinct object\" on empty AOIs ({report['empty_regions']}) | {report['no_object_right']} | >= 0.90 |"]
    for mode in ("unguided", "guided"):
        t = report[f"tiles_{mode}"]
        lines.append(f"| tiles {mode} ({t['tiles']}): recall / precision / hallucinated per tile / counts right | "
                     f"{t['recall']} / {t['precision']} / {t['hallucinated_per_tile']} / {t['counts_right']} | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: the demo model)")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=None, help="write the JSON report here too")
    parser.add_argument("--no-agree", action="store_true", help="free decoding (the agreeing decoding's baseline)")
    args = parser.parse_args(argv)
    report = evaluate_agreement(args.model, scenes=args.scenes, size=args.size, workdir=args.workdir,
                                agree=not args.no_agree)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
