"""Options shared by several `mgimm-geo` commands, each defined once as a named decorator.

Which commands use which option:

- `scene_argument`              info, regions
- `bands_option` (-b/--bands)   info, regions, describe
- `nodata_option` (--nodata)    info, regions, describe
- `aoi_options` (--aoi, --layer, --aoi-crs, --buffer)   regions, describe
- `output_mode_options` (--overwrite, --append, --resume)   describe
- `threads_option` (--threads)  describe, worker, serve
- `model_option` (--model)      regions, describe, worker, serve
- `region_as_option` (--region-as)   describe, worker, serve
- `endpoint_options` (--served-model, --family, --concurrency, --timeout)   describe, worker, serve
- `percentiles_option`          info, regions, describe
- `value_range_option`          info, regions, describe

Each option parses its text into the plain Python value `mgimm_core.scene.Scene.open` takes
(`bands=(3, 2, 1)`, `nodata=0.0`, `percentiles=(2.0, 98.0)`, `value_range=(0.0, 3000.0)`), so a
command passes them straight through: ``Scene.open(scene, **scene_kwargs(...))``.
"""

from __future__ import annotations

import functools
import math

import click


class BandsType(click.ParamType):
    """1-based band indexes as "3,2,1" (three bands, in red, green, blue order) or "4" (grey)."""

    name = "bands"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(",") if p.strip()]
        try:
            bands = tuple(int(p) for p in parts)
        except ValueError:
            self.fail(f"{value!r} is not a list of band numbers; give 1-based indexes like 3,2,1 "
                      f"(red, green, blue) or a single band like 4.", param, ctx)
        if len(bands) not in (1, 3):
            self.fail(f"{value!r} names {len(bands)} bands; give three (red,green,blue, "
                      f"e.g. 3,2,1) or one (shown as grey).", param, ctx)
        if any(b < 1 for b in bands):
            self.fail(f"{value!r}: band numbers start at 1 (like GDAL and rasterio).", param, ctx)
        return bands


class FloatPairType(click.ParamType):
    """Two numbers as "lo,hi" with lo < hi (optionally bounded, e.g. percentiles within 0..100)."""

    def __init__(self, name: str, example: str, lower: float | None = None,
                 upper: float | None = None):
        self.name = name
        self.example = example
        self.lower = lower
        self.upper = upper

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            self.fail(f"{value!r} is not two numbers; give them as lo,hi (e.g. {self.example}).",
                      param, ctx)
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            self.fail(f"{value!r}: the first number must be smaller than the second "
                      f"(e.g. {self.example}).", param, ctx)
        too_low = self.lower is not None and lo < self.lower
        if too_low or (self.upper is not None and hi > self.upper):
            self.fail(f"{value!r}: both numbers must lie within {self.lower:g}..{self.upper:g} "
                      f"(e.g. {self.example}).", param, ctx)
        return (lo, hi)


scene_argument = click.argument(
    "scene", type=click.Path(dir_okay=False, path_type=str), metavar="SCENE")

bands_option = click.option(
    "-b", "--bands", type=BandsType(), default=None,
    help="1-based bands to show as red,green,blue (e.g. 3,2,1), or one band shown as grey. "
         "Default: RGB from the file's colour interpretation, else the first three of exactly "
         "three bands, else the single band (4+ bands without RGB need this option).")

nodata_option = click.option(
    "--nodata", type=float, default=None,
    help="Treat this source value as nodata (overrides the file's nodata value).")

percentiles_option = click.option(
    "--percentiles", type=FloatPairType("percentiles", "2,98", 0.0, 100.0), default=None,
    help="Scene-wide per-band percentile stretch, as lo,hi. Default: 2,98 for data that is not uint8; "
         "uint8 is read as it is unless this is given (e.g. 1,99 for a dark 8-bit scene).")

value_range_option = click.option(
    "--value-range", "value_range", type=FloatPairType("value-range", "0,3000"), default=None,
    help="Source values mapped to 0 and 255 for every band, as lo,hi (overrides --percentiles).")


def scene_options(f):
    """All four scene display options at once (bands, nodata, percentiles, value range)."""
    for option in (value_range_option, percentiles_option, nodata_option, bands_option):
        f = option(f)
    return f


def scene_kwargs(bands, nodata, percentiles, value_range) -> dict:
    """The keyword arguments of `Scene.open` from the parsed option values."""
    return {"bands": bands, "nodata": nodata, "percentiles": percentiles,
            "value_range": value_range}


aoi_option = click.option(
    "--aoi", default=None, metavar="AOI",
    help="Regions: a vector file (GeoJSON, GeoPackage, Shapefile, FlatGeobuf, ...), a WKT polygon, "
         "or 'bbox:minx,miny,maxx,maxy'. GeoJSON, WKT and bbox are lon/lat (EPSG:4326) unless "
         "--aoi-crs says otherwise.")

layer_option = click.option(
    "--layer", default=None, metavar="NAME", help="Layer of a multi-layer AOI file (GeoPackage).")

aoi_crs_option = click.option(
    "--aoi-crs", default=None, metavar="CRS",
    help="CRS of the AOI (e.g. EPSG:32633): needed for files without one (a Shapefile without "
         ".prj), overrides the file's own otherwise.")

buffer_option = click.option(
    "--buffer", type=float, default=None, metavar="METRES",
    help="Grow every region by this many metres on the ground; turns points and lines into polygons.")


def aoi_options(f):
    """--aoi, --layer, --aoi-crs and --buffer at once (the arguments of `read_aoi`)."""
    for option in (buffer_option, aoi_crs_option, layer_option, aoi_option):
        f = option(f)
    return f


def output_mode_options(f):
    """What to do with an existing output: --overwrite, --append or --resume (default: refuse)."""
    for option in (
        click.option("--resume", is_flag=True,
                     help="Finish an interrupted run: keep what OUT holds, describe the rest "
                          "(failed regions are retried)."),
        click.option("--append", is_flag=True, help="Add this run's rows to an existing OUT."),
        click.option("--overwrite", is_flag=True, help="Replace an existing OUT."),
    ):
        f = option(f)
    return f


def output_mode(overwrite: bool, append: bool, resume: bool) -> str:
    """The output mode the three flags ask for ("create" when none); a usage error for two."""
    modes = [m for m, flag in (("overwrite", overwrite), ("append", append), ("resume", resume)) if flag]
    if len(modes) > 1:
        raise click.UsageError(f"--{modes[0]} and --{modes[1]} exclude each other")
    return modes[0] if modes else "create"


threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None, metavar="N",
    help="Torch threads for the model. Default: the cores free now (cores minus those other "
         "processes keep busy, at least 1): on a busy machine more threads than free cores run several times slower.")

#: The ways a user may choose (mgimm_core/families/regions.py REGION_AS less MGIMM's own region tokens).
REGION_WAYS = ("text", "outline", "crop")

region_as_option = click.option(
    "--region-as", type=click.Choice(REGION_WAYS), default=None,
    help="How a region reaches the model: text (its box written in the model's own convention), outline (the "
         "polygon's outline drawn on the chip in red) or crop (the chip cropped to the region). Default: the "
         "model family's way (`mgimm-geo model-info` lists the ways a model takes).")


def resolve_model_now(model_dir):
    """The model folder resolved now, for a command a person starts by hand (serve): a folder that
    holds no model is a usage error (exit 2) at start, not an HTTP error on every later request.
    An endpoint URL is returned as it is (its server is asked on first use)."""
    from mgimm_core.endpoint import is_endpoint_url
    from mgimm_core.errors import MGIMMError
    from mgimm_core.model_dir import ModelDirectory

    if is_endpoint_url(model_dir):
        return model_dir
    try:
        return ModelDirectory.resolve(model_dir)
    except MGIMMError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None


def check_region_as(model_dir, region_as: str | None) -> None:
    """A usage error (exit 2) now when the model's family cannot take `region_as`; a model folder that
    does not resolve is left to fail where it is first used (each request of a worker; serve has
    resolved it already, `resolve_model_now`)."""
    if region_as is None:
        return
    from mgimm_core.errors import MGIMMError, OptionsError
    from mgimm_core.model_dir import ModelDirectory

    try:
        family = ModelDirectory.resolve(model_dir).family
    except MGIMMError:
        return
    try:
        family.check_region_as(region_as)
    except OptionsError as exc:
        raise click.BadParameter(str(exc), param_hint="--region-as") from None


def model_option(command):
    """--model DIR and --vision DIR. With --vision the model is resolved now (a ModelDirectory is
    passed on as `model_dir`); without, `model_dir` stays the path, resolved when first needed."""
    @click.option("--model", "model_dir", default=None, metavar="DIR|URL",
                  help="The model: a saved MGIMM directory, a LLaVA-1.5 directory (Hugging Face `llava` or "
                       "original format) or GeoChat (default, or `demo`: the demo model shipped with mgimm-geo); or an "
                       "OpenAI-compatible endpoint's base URL ending in /v1 (vLLM, Ollama, llama.cpp, mgimm-geo "
                       "serve; key from MGIMM_API_KEY or OPENAI_API_KEY).")
    @click.option("--vision", "vision_dir", default=None, metavar="DIR",
                  help="Local vision-tower folder of an original-format LLaVA/GeoChat model (default: its "
                       "mm_vision_tower, as a folder or in the Hugging Face cache).")
    @functools.wraps(command)
    def with_model(*args, model_dir=None, vision_dir=None, **kwargs):
        if vision_dir is not None:
            from mgimm_core.errors import MGIMMError
            from mgimm_core.model_dir import ModelDirectory

            try:
                model_dir = ModelDirectory.resolve(model_dir, vision_dir)
            except MGIMMError as exc:
                raise click.ClickException(str(exc)) from exc
        return command(*args, model_dir=model_dir, **kwargs)
    return with_model


def endpoint_options(command):
    """How a `--model URL` endpoint is asked: --served-model, --family, --concurrency, --timeout,
    passed on as `endpoint` (a mgimm_core.endpoint.EndpointOptions; exit 2 for values out of range)."""
    @click.option("--served-model", default=None, metavar="NAME",
                  help="With --model URL: the served model id (default: the only id GET /v1/models lists).")
    @click.option("--family", default=None, metavar="NAME",
                  help="With --model URL: the served model's family, i.e. how a region is written for it "
                       "(default: guessed from the served id; `generic` outlines the region on the chip).")
    @click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True, metavar="N",
                  help="With --model URL: regions asked at a time.")
    @click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=300.0, show_default=True,
                  metavar="S", help="With --model URL: seconds to wait for one answer.")
    @functools.wraps(command)
    def with_endpoint(*args, served_model=None, family=None, concurrency=4, timeout_s=300.0, **kwargs):
        from mgimm_core.endpoint import EndpointOptions

        endpoint = EndpointOptions(served_model=served_model, family=family, concurrency=concurrency,
                                   timeout=timeout_s)
        return command(*args, endpoint=endpoint, **kwargs)
    return with_endpoint
