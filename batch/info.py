"""`mgimm-geo info SCENE`: what the model would see of a raster, as JSON on stdout.

CRS, size, bands (chosen and available), dtype, nodata/mask policy, overviews, block shape, the
scene-wide stretch and the ground sample distance. Nothing is written anywhere else.
"""

import json

import click

from batch.options import scene_argument, scene_kwargs, scene_options
from mgimm_core.errors import BandError, MGIMMError
from mgimm_core.scene import Scene


@click.command("info")
@scene_argument
@scene_options
@click.option("--indent", type=int, default=2, show_default=True,
              help="JSON indentation (0 for one line).")
def command(scene, bands, nodata, percentiles, value_range, indent):
    """Describe SCENE (any GDAL raster) as the model would see it: JSON to stdout."""
    try:
        with Scene.open(scene, **scene_kwargs(bands, nodata, percentiles, value_range)) as opened:
            report = opened.info()
    except BandError as exc:
        raise click.BadParameter(str(exc), param_hint="'-b' / '--bands'") from exc
    except MGIMMError as exc:
        raise click.ClickException(str(exc)) from exc
    if report["crs"] is None:
        click.echo(f"Warning: {scene} has no CRS, so AOIs in another CRS (e.g. GeoJSON lon/lat) "
                   f"cannot be placed on it and its GSD is unknown. Assign one with "
                   f"gdal_edit.py -a_srs EPSG:xxxx {scene}", err=True)
    click.echo(json.dumps(report, indent=indent or None))
