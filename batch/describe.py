"""`mgimm-geo describe`: AOI regions (or every tile) of one or more scenes -> a GeoPackage layer."""

from __future__ import annotations

import json
import logging
import sys
import time

import click

from batch.options import aoi_options, bands_option, nodata_option, output_mode_options
from mgimm_core.errors import MGIMMError
from mgimm_core.output import RunInfo
from mgimm_core.regions import read_aoi
from mgimm_core.scene import Scene, expand_scene_paths

log = logging.getLogger(__name__)

EXIT_SOME_FAILED = 3


def _progress(total, quiet: bool, unit: str):
    from tqdm.auto import tqdm

    disable = quiet or not sys.stderr.isatty()
    return tqdm(total=total, unit=unit, desc="describe", disable=disable, file=sys.stderr,
                dynamic_ncols=True)


@click.command("describe")
@click.argument("scenes", nargs=-1, required=True, metavar="SCENE...")
@aoi_options
@click.option("-o", "--output", required=True, metavar="OUT",
              help="Output file: .gpkg (incremental, resumable), .geojson, .fgb or .csv.")
@output_mode_options
@click.option("--model", "model_dir", default=None, metavar="DIR",
              help="A saved MGIMM directory (default: the demo model shipped with mgimm-geo).")
@bands_option
@nodata_option
@click.option("--tiles", is_flag=True, help="Describe every tile of each scene's grid (no --aoi needed).")
@click.option("--tile-size", type=click.IntRange(min=16), default=512, show_default=True,
              help="Tile side in scene pixels (with --tiles).")
@click.option("--tile-overlap", type=click.IntRange(min=0), default=0, show_default=True,
              help="Overlap between tiles in pixels (with --tiles).")
@click.option("--min-valid", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Skip tiles with a smaller share of valid (not nodata) pixels (with --tiles).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Regions per model batch.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=200, show_default=True,
              help="Longest answer, in tokens.")
@click.option("--prompt", default=None, help="Description instruction (default: the one the model was "
                                             "trained with).")
@click.option("--no-attributes", is_flag=True, help="Skip the attribute question (object, colour, shape...).")
@click.option("--compile", "compile_decode", is_flag=True,
              help="Static KV cache and compiled decode (CUDA: faster after the first batch; same text).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process; ray: actors on a Ray cluster (pip install \"ray[default]\"), each "
                   "loading the model once and reading rasters by path; see docs/scaling.md.")
@click.option("--address", default=None, metavar="ADDR",
              help="Ray cluster to join (auto, HOST:6379, ray://HOST:10001); default: a local one (--engine ray).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Ray actors (--engine ray); default one per GPU of the cluster, else one per CPU.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def command(ctx, scenes, aoi, layer, aoi_crs, buffer, output, overwrite, append, resume, model_dir, bands,
            nodata, tiles, tile_size, tile_overlap, min_valid, batch_size, device, max_new_tokens, prompt,
            no_attributes, compile_decode, engine, address, workers, quiet):
    """Describe the AOI regions of SCENE(s) (files, directories of rasters, or VRTs) with MGIMM and
    write one feature per region (or per tile with --tiles) to OUT.

    Each AOI goes to every scene that covers it. Results are committed batch by batch; an
    interrupted run keeps what it wrote, and --resume finishes the rest without duplicates.

    \b
    stdout: a JSON summary; stderr: progress and messages.
    Exit status: 0 all regions described; 3 finished but some regions failed (their rows carry
    the error); 1 the run could not go on (bad input, model, output); 2 usage error.
    """
    if not tiles and aoi is None:
        raise click.UsageError("give --aoi AOI (regions to describe) or --tiles (every tile)")
    modes = [m for m, flag in (("overwrite", overwrite), ("append", append), ("resume", resume)) if flag]
    if len(modes) > 1:
        raise click.UsageError(f"--{modes[0]} and --{modes[1]} exclude each other")
    mode = modes[0] if modes else "create"
    quiet = quiet or (ctx.obj or {}).get("verbosity", 0) < 0
    summary = run_describe(scenes, output, aoi=aoi, layer=layer, aoi_crs=aoi_crs, buffer=buffer, mode=mode,
                           model_dir=model_dir, bands=bands, nodata=nodata, tiles=tiles, tile_size=tile_size,
                           tile_overlap=tile_overlap, min_valid=min_valid, batch_size=batch_size, device=device,
                           max_new_tokens=max_new_tokens, prompt=prompt, attributes=not no_attributes,
                           compile=compile_decode, engine=engine, address=address, workers=workers,
                           quiet=quiet)
    click.echo(json.dumps(summary, indent=2))
    if summary["failed"]:
        click.echo(f"Warning: {summary['failed']} region(s) failed; see the 'error' field in {output}.",
                   err=True)
        ctx.exit(EXIT_SOME_FAILED)


def run_describe(scenes, output, *, aoi=None, layer=None, aoi_crs=None, buffer=None, mode="create",
                 model_dir=None, bands=None, nodata=None, tiles=False, tile_size=512, tile_overlap=0,
                 min_valid=0.5, batch_size=16, device="auto", max_new_tokens=200, prompt=None,
                 attributes=True, compile=False, engine="local", address=None, workers=None,
                 quiet=False) -> dict:
    """Resolve inputs, load the model (here, or on Ray workers) and describe; core errors become
    click errors (exit 1)."""
    started = time.perf_counter()
    runner = None
    try:
        paths = expand_scene_paths(scenes)
        features = read_aoi(str(aoi), layer=layer, buffer=buffer, crs=aoi_crs) if aoi else []
        opened = [Scene.open(p, bands=bands, nodata=nodata) for p in paths]
        if engine == "ray" and tiles:
            raise click.UsageError("--tiles is not supported with --engine ray yet; use --engine local")
        from mgimm_core.engines import open_engine  # torch (and ray) load only once the inputs are known good

        runner = open_engine(engine, model_dir, device=device, max_new_tokens=max_new_tokens, compile=compile,
                             address=address, workers=workers, bands=bands, nodata=nodata)
        run = RunInfo(model_id=runner.model_id, model_sha256=runner.model_sha256,
                      parameters={"scenes": paths, "aoi": str(aoi) if aoi else None, "layer": layer,
                                  "tiles": tiles, "tile_size": tile_size, "batch_size": batch_size,
                                  "device": runner.device, "max_new_tokens": max_new_tokens,
                                  "prompt": prompt, "bands": bands, "nodata": nodata, "engine": engine,
                                  "compile": compile})
        summary = _run(opened, features, runner, str(output), mode, run, tiles=tiles, tile_size=tile_size,
                       tile_overlap=tile_overlap, min_valid=min_valid, batch_size=batch_size,
                       prompt=prompt, attributes=attributes, quiet=quiet)
    except MGIMMError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        click.echo(f"Interrupted: what was written to {output} is kept; rerun with --resume to finish.",
                   err=True)
        sys.exit(130)
    finally:
        if runner is not None:
            runner.close()
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


def _run(scenes, features, runner, output, mode, run, *, quiet, **options) -> dict:
    """The engine's describe_to_output with a progress bar on stderr."""
    unit = "tile" if options.get("tiles") else "region"
    total = len(features) if unit == "region" and len(scenes) == 1 else None
    with _progress(total, quiet, unit) as bar:
        def on_batch(done):
            bar.update(done - bar.n)

        return runner.describe_to_output(scenes, features, output, mode, run, on_batch=on_batch, **options)
