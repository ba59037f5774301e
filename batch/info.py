"""`mgimm-geo info SCENE`: what the model would see of a raster, as JSON on stdout.

CRS, size, bands (chosen and available), dtype, nodata/mask policy, overviews, block shape, the
scene-wide stretch and the ground sample distance. Nothing is written anywhere else.
"""

import json

import click

from batch.options import scene_argument, scene_kwargs, scene_options
from mgimm_core.errors import BandError, MGIMMError
from mgimm_core.scene import Scene


def _without_band_choice(scene: str, options: dict, needed: BandError) -> dict:
    """The report of a raster whose display bands cannot be chosen by default (4+ bands without
    red/green/blue colour interpretation): everything but the band choice and its stretch, and
    what to give -b."""
    with Scene.open(scene, **dict(options, bands=(1,))) as opened:
        report = opened.info()
    report.update(band_indexes=None, stretch=None,
                  band_choice={"needed": True, "reason": str(needed),
                               "example": "-b 3,2,1 (red, green, blue) or -b 1 (grey)"})
    click.echo(f"Note: {needed}", err=True)
    return report


@click.command("info")
@scene_argument
@scene_options
@click.option("--indent", type=int, default=2, show_default=True,
              help="JSON indentation (0 for one line).")
def command(scene, bands, nodata, percentiles, value_range, indent):
    """Describe SCENE (any GDAL raster) as the model would see it: JSON to stdout."""
    options = scene_kwargs(bands, nodata, percentiles, value_range)
    try:
        try:
            with Scene.open(scene, **options) as opened:
                report = opened.info()
        except BandError as exc:
            if bands is not None:         # the bands asked for are wrong: a usage error
                raise click.BadParameter(str(exc), param_hint="'-b' / '--bands'") from exc
            report = _without_band_choice(scene, options, exc)
    except MGIMMError as exc:
        raise click.ClickException(str(exc)) from exc
    if report["crs"] is None:
        click.echo(f"Warning: {scene} has no CRS, so AOIs in another CRS (e.g. GeoJSON lon/lat) "
                   f"cannot be placed on it and its GSD is unknown. Assign one with "
                   f"gdal_edit.py -a_srs EPSG:xxxx {scene}", err=True)
    click.echo(json.dumps(report, indent=indent or None))
