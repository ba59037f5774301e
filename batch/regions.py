"""`mgimm-geo regions`: show what the model would see for each AOI region, before running it."""

from __future__ import annotations

import dataclasses
import json

import click

from batch.options import aoi_options, model_option, scene_argument, scene_kwargs, scene_options
from mgimm_core.errors import BandError, MGIMMError, RegionError
from mgimm_core.model_dir import ModelDirectory
from mgimm_core.regions import prepare_regions, read_aoi
from mgimm_core.scene import Scene


def _crs_label(scene) -> str | None:
    if scene.crs is None:
        return None
    epsg = scene.crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else scene.crs.to_wkt()


def _report(scene, aoi: str, results) -> dict:
    regions = []
    for result in results:
        if isinstance(result, RegionError):
            regions.append({"id": result.feature_id, "status": "error", "error_code": result.code,
                            "error_type": type(result).__name__, "error": str(result)})
        else:
            regions.append({**result.to_dict(), "status": "ok"})
    return {"scene": scene.path, "crs": _crs_label(scene), "aoi": aoi,
            "ok": sum(r["status"] == "ok" for r in regions),
            "failed": sum(r["status"] == "error" for r in regions), "regions": regions}


def _print_table(report: dict):
    click.echo(f"{report['scene']} ({report['crs']}), AOI {report['aoi']}: "
               f"{report['ok']} region(s) ok, {report['failed']} failed")
    click.echo(f"{'id':>12}  {'window (col,row,w,h)':>24}  {'read':>9}  {'valid':>6}  "
               f"{'gsd m':>8}  box (x1,y1,x2,y2)")
    for r in report["regions"]:
        if r["status"] != "ok":
            click.echo(f"{r['id']:>12}  error: {r['error']}")
            continue
        w = r["window"]
        win = f"{w['col_off']},{w['row_off']},{w['width']},{w['height']}"
        read = "x".join(str(v) for v in r["out_shape"])
        box = ",".join(f"{v:.1f}" for v in r["box"])
        click.echo(f"{r['id']:>12}  {win:>24}  {read:>9}  {r['valid_fraction']:>6.3f}  "
                   f"{r['gsd_m']:>8.3f}  {box}")


@click.command("regions")
@scene_argument
@aoi_options
@model_option
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON report instead of a table.")
@scene_options
def command(scene, aoi, layer, aoi_crs, buffer, model_dir, as_json, bands, nodata, percentiles, value_range):
    """Show, per AOI region, the window, read shape, box, valid fraction and GSD the model would
    get from SCENE, or why the region cannot be used.

    The chip settings (input size, context margin, smallest window) are the model's (--model,
    default the demo model), so this previews exactly what `describe` with that model reads. The
    model's weights are not loaded.

    \b
    Output (stdout): a table, or with --json an object
      {"scene", "crs", "aoi", "ok", "failed", "regions": [...]}, where each region has
      "id", "status": "ok", "window": {col_off, row_off, width, height} (scene pixels),
      "out_shape": [h, w], "box": [x1, y1, x2, y2] (out_shape pixels), "mask_pixels",
      "valid_fraction" (inside the polygon, inside the scene and not nodata), "gsd_m"
      (metres per chip pixel); or "status": "error" with "error", "error_code" (stable, as in
      describe's rows) and "error_type". The report also has "model" and "chip" (input_size,
      context, min_window).
    Messages go to stderr.

    \b
    Exit status:
      0  at least one region is usable; the others are listed with their error.
      1  every region failed (each error is printed to stderr, nothing to stdout), or the
         input as a whole is bad: scene or AOI missing or unreadable, unknown or
         incompatible CRS.
      2  usage error, a missing or wrong band choice (-b/--bands) included.
    """
    if aoi is None:
        raise click.UsageError("Missing option '--aoi'.")
    try:
        model = ModelDirectory.resolve(model_dir)
        features = read_aoi(aoi, layer=layer, buffer=buffer, crs=aoi_crs)
        with Scene.open(scene, **scene_kwargs(bands, nodata, percentiles, value_range)) as opened:
            results = prepare_regions(opened, features, model.chip)
            report = _report(opened, aoi, results)
            report.update(model=model.model_id, chip=dataclasses.asdict(model.chip))
    except BandError as exc:
        from .describe import band_usage_error

        raise band_usage_error(exc) from exc
    except MGIMMError as exc:
        raise click.ClickException(str(exc)) from exc
    label = "Error" if report["ok"] == 0 else "Warning"
    for r in report["regions"]:
        if r["status"] == "error":
            click.echo(f"{label}: {r['error']}", err=True)
    if report["ok"] == 0:
        raise click.ClickException(f"none of the {report['failed']} region(s) of {aoi} can be "
                                   f"used on {scene}; see the errors above.")
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_table(report)
