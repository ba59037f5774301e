"""`mgimm-geo demo [DIR]`: a synthetic scene, AOIs and ground truth, described by the demo model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from batch.describe import run_describe
from mgimm_core.engines import LoadOptions
from mgimm_core.jobs import AOISource, FilesJob


def _rows(path: Path) -> list[dict]:
    from pyogrio.raw import read

    meta, _fids, _geoms, values = read(str(path), layer="regions")
    names = list(meta["fields"])
    return [dict(zip(names, row)) for row in zip(*values)]


@click.command("demo")
@click.argument("directory", default="mgimm-demo", required=False, metavar="[DIR]")
@click.option("--model", "model_dir", default=None, metavar="DIR", help="Model directory (default: demo).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=2024, show_default=True, help="Seed of the synthetic scene.")
@click.option("--overwrite", is_flag=True, help="Replace DIR/descriptions.gpkg if it exists.")
def command(directory, model_dir, device, seed, overwrite):
    """Write a synthetic georeferenced scene (UTM GeoTIFF), AOIs over its objects (EPSG:4326
    GeoJSON) and the ground truth into DIR, describe the AOIs, and print what the model said next
    to the truth. The GeoPackage DIR/descriptions.gpkg opens in QGIS, labelled."""
    from training.synthetic.demo_inputs import TRUTH_PREFIX, write_demo_inputs

    directory = Path(directory)
    output = directory / "descriptions.gpkg"
    if output.exists() and not overwrite:
        raise click.ClickException(f"{output} exists; pass --overwrite to replace it or choose another DIR")
    click.echo(f"Writing a synthetic scene and AOIs to {directory}/ ...", err=True)
    inputs = write_demo_inputs(directory, seed=seed)
    job = FilesJob(scenes=(str(inputs.scene),), output=str(output), mode="overwrite" if overwrite else "create",
                   aoi=AOISource(str(inputs.aoi)))
    summary = run_describe(job, LoadOptions(device=device), model_dir=model_dir)
    for row in _rows(output):
        said = " ".join(str(row.get(k)) for k in ("size", "color", "shape", "object") if row.get(k))
        truth = " ".join(str(row.get(TRUTH_PREFIX + k)) for k in ("size", "color", "shape", "name")
                         if row.get(TRUTH_PREFIX + k))
        click.echo(f"[{row['region_id']}]" + (f" truth: {truth}" if truth else ""))
        sure = row.get("object_p")     # a missing REAL reads as NaN
        click.echo(f"  attributes: {said or '-'}"
                   + (f" (object_p {sure:.4f})" if sure is not None and not math.isnan(sure) else ""))
        click.echo(f"  description: {row.get('description') or row.get('error')}")
    click.echo(json.dumps({k: summary[k] for k in ("output", "described", "failed", "seconds")}), err=True)
    click.echo(f"Open {output} in QGIS over {inputs.scene} to see the labelled regions.", err=True)
