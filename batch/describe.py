"""`mgimm-geo describe`: AOI regions (or every tile) of one or more scenes -> a GeoPackage layer."""

from __future__ import annotations

import json
import logging
import sys

import click

from batch.options import (aoi_options, endpoint_options, model_option, output_mode, output_mode_options,
                           region_as_option, scene_options, threads_option)
from mgimm_core.engines import ENGINES, LoadOptions, open_engine
from mgimm_core.errors import BandError, MGIMMError, OptionsError
from mgimm_core.jobs import AOISource, FilesJob, run_files_job
from mgimm_core.pipeline import DescribeOptions, TileOptions

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
              help="Output file: .gpkg (incremental, resumable), .geojson, .fgb or .csv (these write "
                   "OUT's provenance beside it, as <stem>_runs.json).")
@output_mode_options
@model_option
@endpoint_options
@scene_options
@click.option("--tiles", is_flag=True, help="Describe every tile of each scene's grid (instead of --aoi).")
@click.option("--tile-size", type=click.IntRange(min=16), default=512, show_default=True,
              help="Tile side in scene pixels (with --tiles).")
@click.option("--tile-overlap", type=click.IntRange(min=0), default=0, show_default=True,
              help="Overlap between tiles in pixels, smaller than --tile-size (with --tiles). The last "
                   "column and row are moved inward to end at the scene's edge, so they overlap more.")
@click.option("--min-valid", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Skip tiles with a smaller share of valid (not nodata) pixels (with --tiles).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Regions per model batch. Default: 64 for small models such as the demo model, 16 for "
                   "large ones (over 512 MB of weights).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@threads_option
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=200, show_default=True,
              help="Longest answer, in tokens.")
@click.option("--prompt", default=None, help="Description instruction (default: the one the model was "
                                             "trained with).")
@region_as_option
@click.option("--no-attributes", is_flag=True, help="Skip the attribute question (object, colour, shape...).")
@click.option("--strict", is_flag=True, help="Refuse a --prompt with words the model does not know (default: a "
                                             "warning that lists them).")
@click.option("--guide", default=None, metavar="OBJECTS",
              help="A polygon layer of objects (building footprints, detections; any CRS): each object "
                   "inside a region or tile becomes a region prompt of its description, and gets its own "
                   "attributes in an `objects` layer linked to the row (the paper's multi-region mode).")
@click.option("--guide-layer", default=None, metavar="NAME", help="Layer of --guide to read.")
@click.option("--max-guides", type=click.IntRange(min=1), default=8, show_default=True,
              help="Guide objects per region or tile, largest first; the others are counted in the row.")
@click.option("--no-repeat-ngram", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Also forbid any N words in a row twice in one answer (0: off). Off by default: it "
                   "breaks phrases (\"in in\"); the default repetition guard (no word twice in a row, an "
                   "answer cut before a sentence it already said) is always on.")
@click.option("--agree/--no-agree", default=True, show_default=True,
              help="Descriptions and attributes agree: where a description names the region's object "
                   "otherwise than its attribute answer, the reading the model finds likelier over both "
                   "questions wins and the other answer is decoded again, limited to its words; with --guide, "
                   "the description is held to the confirmed guide objects' answers. --no-agree: free "
                   "decoding.")
@click.option("--compile", "compile_decode", is_flag=True,
              help="Static KV cache and compiled decode (CUDA: faster after the first batch; same text).")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="local: this process; ray: actors on a Ray cluster (pip install \"ray[default]\"), each "
                   "loading the model once and reading rasters by path; see docs/scaling.md.")
@click.option("--address", default=None, metavar="ADDR",
              help="Ray cluster to join (auto, HOST:6379, ray://HOST:10001); default: a local one (--engine ray).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Ray actors (--engine ray); default one per GPU of the cluster, else one per CPU.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def command(ctx, scenes, aoi, layer, aoi_crs, buffer, output, overwrite, append, resume, model_dir, bands,
            nodata, percentiles, value_range, tiles, tile_size, tile_overlap, min_valid, batch_size, device, threads,
            max_new_tokens, prompt, region_as, no_attributes, strict, guide, guide_layer, max_guides, no_repeat_ngram,
            agree, compile_decode, engine, address, workers, quiet, endpoint):
    """Describe the AOI regions of SCENE(s) (files, directories of rasters, or VRTs) with MGIMM and
    write one feature per region (or per tile with --tiles) to OUT.

    Each AOI goes to every scene that covers it. Results are committed batch by batch; an
    interrupted run keeps what it wrote, and --resume finishes the rest without duplicates.

    \b
    stdout: a JSON summary; stderr: progress and messages.
    Exit status: 0 all regions described; 3 finished but some regions failed (their rows carry
    the error); 1 the run could not go on (bad input, model, output); 2 usage error.
    """
    try:
        job = FilesJob(
            scenes=tuple(scenes), output=str(output), mode=output_mode(overwrite, append, resume),
            aoi=None if aoi is None else AOISource(str(aoi), layer=layer, crs=aoi_crs, buffer=buffer),
            bands=bands, nodata=nodata, percentiles=percentiles, value_range=value_range,
            guide=None if guide is None else AOISource(str(guide), layer=guide_layer, crs=aoi_crs),
            options=DescribeOptions(batch_size=batch_size, prompt=prompt, attributes=not no_attributes,
                                    tiles=TileOptions(tile_size, tile_overlap, min_valid) if tiles else None,
                                    max_guides=max_guides, strict=strict))
        load = LoadOptions(device=device, max_new_tokens=max_new_tokens, compile=compile_decode, threads=threads,
                           no_repeat_ngram=no_repeat_ngram, agree=agree, region_as=region_as, endpoint=endpoint)
    except OptionsError as exc:
        raise usage_error(exc) from None
    from mgimm_core.endpoint import is_endpoint_url

    if (endpoint.served_model or endpoint.family) and not is_endpoint_url(model_dir):
        raise click.UsageError("--served-model and --family name a served model: give the endpoint as "
                               "--model http://HOST:PORT/v1.")
    quiet = quiet or (ctx.obj or {}).get("verbosity", 0) < 0
    summary = run_describe(job, load, model_dir=model_dir, engine=engine, address=address, workers=workers,
                           quiet=quiet)
    click.echo(json.dumps(summary, indent=2))
    if summary["failed"]:
        click.echo(f"Warning: {summary['failed']} region(s) failed; see the 'error' field in {output}.",
                   err=True)
        ctx.exit(EXIT_SOME_FAILED)


#: The CLI's flags for the fields an OptionsError names.
OPTION_FLAGS = {"tile_size": "--tile-size", "tile_overlap": "--tile-overlap", "min_valid": "--min-valid",
                "batch_size": "--batch-size", "aoi": "--aoi / --tiles", "tiles": "--aoi / --tiles",
                "engine": "--engine / --tiles", "max_new_tokens": "--max-new-tokens", "threads": "--threads",
                "scenes": "SCENE", "mode": "--overwrite / --append / --resume", "max_guides": "--max-guides",
                "no_repeat_ngram": "--no-repeat-ngram", "prompt": "--prompt", "model": "--model",
                "served_model": "--served-model", "family": "--family", "concurrency": "--concurrency",
                "timeout": "--timeout", "guide": "--guide", "region_as": "--region-as"}


def usage_error(exc: OptionsError) -> click.UsageError:
    """An options error in the CLI's words: the flag at fault, then the core's message."""
    return click.BadParameter(str(exc), param_hint=OPTION_FLAGS.get(exc.option or "", None))


def band_usage_error(exc: BandError) -> click.UsageError:
    """A band choice that is needed (4+ bands without RGB colour interpretation) or out of range:
    the -b/--bands option's usage error (exit 2), like any other option the user must fix."""
    return click.BadParameter(str(exc), param_hint="-b/--bands")


def run_describe(job: FilesJob, load: LoadOptions = LoadOptions(), *, model_dir=None, engine: str = "local",
                 address=None, workers=None, quiet: bool = False) -> dict:
    """Open the engine (the model loads on first use), run the files job with a progress bar; core
    errors become click errors (exit 1), except a band choice that is missing or wrong: that is the
    -b/--bands option's usage error (exit 2), as with any other option the user must fix."""
    runner = None
    try:
        runner = open_engine(engine, model_dir, load, address=address, workers=workers,
                             scene_options=job.scene_options)
        with _progress(None, quiet, job.options.unit.rstrip("s")) as bar:
            def on_batch(done, total):
                if total is not None and bar.total != total:
                    bar.total = total
                bar.update(done - bar.n)

            return run_files_job(job, runner, on_batch=on_batch)
    except OptionsError as exc:
        raise usage_error(exc) from exc
    except BandError as exc:
        raise band_usage_error(exc) from exc
    except MGIMMError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        click.echo(f"Interrupted: what was written to {job.output} is kept; rerun with --resume to finish.",
                   err=True)
        sys.exit(130)
    finally:
        if runner is not None:
            runner.close()
