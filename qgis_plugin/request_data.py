"""QGIS objects -> plain request data, on the main thread, before any task starts.

In worker mode a request names the raster by its local path when GDAL reads it from a file; any
other raster (WMS, XYZ, WCS, ...) is rendered to a georeferenced GeoTIFF chip at the layer's
resolution (or the canvas's, for layers without one) covering the regions. A local file for a server (or for the
endpoint mode's worker) goes region by region, each as the chip the geo core would read (chip_jobs
here, server_chips.py, chips.py), so a request's size depends on the region, not the raster.
Geometries go out as WKT in the raster's CRS. Problems the user can fix (no CRS, region outside the
raster) raise RequestError here, before the worker is bothered.
"""

from __future__ import annotations

import base64
import math
import os
import tempfile

from osgeo import gdal
from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeatureRequest, QgsGeometry,
                       QgsProject, QgsRasterFileWriter, QgsRasterLayer, QgsRasterPipe, QgsRectangle)
from qgis.PyQt.QtGui import QTransform

from .bands import PROPERTY as BANDS_PROPERTY
from .bands import BandChoice, default_bands, parse_bands
from .fields import plain_value
from .chips import inverse_geotransform
from .server_chips import ChipJob, RasterInfo

MAX_CHIP_SIDE = 2048  # pixels: a rendered chip is decimated to stay within this


class RequestError(Exception):
    """The request cannot be made; `code` as the protocol's, the message says what to do."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def local_raster_path(layer: QgsRasterLayer):
    """The file GDAL reads for `layer`, or None when it is not a local file (WMS, XYZ, /vsicurl/)."""
    if layer.providerType() != "gdal":
        return None
    path = layer.source().split("|")[0]
    return path if os.path.isfile(path) else None


def band_default(layer: QgsRasterLayer) -> BandChoice | None:
    """bands.py default_bands for `layer`: its colour interpretations, band descriptions and, for a
    local file, its name and metadata (where a sensor such as Landsat shows itself)."""
    provider = layer.dataProvider()
    count = layer.bandCount()
    interpretations = [provider.colorInterpretationName(b).lower() for b in range(1, count + 1)]
    descriptions, hint = [""] * count, layer.name()
    path = local_raster_path(layer)
    if path is not None:
        dataset = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY)
        if dataset is not None:
            descriptions = [dataset.GetRasterBand(b).GetDescription() for b in range(1, count + 1)]
            metadata = " ".join(f"{k}={v}" for k, v in (dataset.GetMetadata() or {}).items())
            hint = f"{os.path.basename(path)} {layer.name()} {metadata}"
            dataset = None
    return default_bands(interpretations, descriptions, hint)


def request_bands(layer: QgsRasterLayer) -> list | None:
    """The bands a request for `layer` names: the user's choice remembered on the layer, else the
    default (band_default); None when the raster's own colour interpretation or bands hold."""
    remembered = parse_bands(layer.customProperty(BANDS_PROPERTY, ""), layer.bandCount())
    if remembered is not None:
        return list(remembered)
    choice = band_default(layer)
    return None if choice is None else list(choice.bands)


def check_crs(layer: QgsRasterLayer) -> QgsCoordinateReferenceSystem:
    crs = layer.crs()
    if not crs.isValid():
        raise RequestError("no_crs", f"The raster \"{layer.name()}\" has no CRS, so a drawn region cannot be "
                                     f"placed on it. Set it in Layer Properties > Source > Assigned "
                                     f"coordinate reference system (or georeference the file).")
    return crs


def crs_text(crs: QgsCoordinateReferenceSystem) -> str:
    """"EPSG:32633"-style id when the CRS has one, else its WKT (what pyproj reads on the other side)."""
    authid = crs.authid()
    if authid and not authid.upper().startswith("USER:"):
        return authid
    return crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)


def to_layer_crs(geometries, source_crs: QgsCoordinateReferenceSystem, layer: QgsRasterLayer):
    """Copies of `geometries` transformed from `source_crs` (e.g. the canvas's) to the layer's CRS,
    each checked to overlap the raster's extent."""
    crs = check_crs(layer)
    transform = QgsCoordinateTransform(source_crs, crs, QgsProject.instance())
    extent = QgsGeometry.fromRect(layer.extent())
    out = []
    for geometry in geometries:
        geometry = QgsGeometry(geometry)
        if source_crs != crs:
            geometry.transform(transform)
        if geometry.isEmpty() or not geometry.isGeosValid() and geometry.makeValid().isEmpty():
            raise RequestError("bad_input", "The drawn region is empty or degenerate; draw a polygon with "
                                            "at least three distinct corners.")
        out.append(geometry)
    if not any(g.intersects(extent) for g in out):
        raise RequestError("region_outside", f"The region lies outside the raster \"{layer.name()}\" "
                                             f"(in its CRS {crs.authid() or 'custom'}); draw it over the "
                                             f"raster, or choose the raster the region covers in the "
                                             f"MGIMM panel.")
    return out


def render_chip(layer: QgsRasterLayer, extent: QgsRectangle, units_per_pixel: float, path: str = None) -> str:
    """Write `extent` (layer CRS) of `layer` at `units_per_pixel` (layer CRS units) to a GeoTIFF
    through the layer's provider, so web layers work too. Returns the file's path."""
    extent = extent.intersect(layer.extent()) if layer.extent().intersects(extent) else extent
    width = max(1, math.ceil(extent.width() / units_per_pixel))
    height = max(1, math.ceil(extent.height() / units_per_pixel))
    scale = max(width, height) / MAX_CHIP_SIDE
    if scale > 1:
        width, height = max(1, int(width / scale)), max(1, int(height / scale))
    if path is None:
        handle, path = tempfile.mkstemp(prefix="mgimm_chip_", suffix=".tif")
        os.close(handle)
    pipe = QgsRasterPipe()
    provider = layer.dataProvider().clone()
    if not pipe.set(provider):
        raise RequestError("bad_input", f"Cannot read the raster \"{layer.name()}\" through its provider.")
    writer = QgsRasterFileWriter(path)
    writer.setOutputFormat("GTiff")
    error = writer.writeRaster(pipe, width, height, extent, layer.crs(), QgsProject.instance().transformContext())
    if error != QgsRasterFileWriter.NoError:
        raise RequestError("bad_input", f"Cannot render a chip of \"{layer.name()}\" (raster writer error "
                                        f"{int(error)}); save the layer to a GeoTIFF and use that instead.")
    return path


def raster_info(path: str) -> RasterInfo:
    """Size and geotransform of a local raster, as GDAL (and so the core) sees them."""
    dataset = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY)
    if dataset is None:
        raise RequestError("scene_unreadable", f"GDAL cannot open {path} ({gdal.GetLastErrorMsg()}); check "
                                               f"that the file is complete.")
    gt = tuple(dataset.GetGeoTransform())
    info = RasterInfo(os.path.realpath(path), dataset.RasterXSize, dataset.RasterYSize, gt)
    dataset = None
    if gt[2] != 0 or gt[4] != 0:
        raise RequestError("geotransform_error", f"{path} has a rotated geotransform, which MGIMM cannot "
                                                 f"place regions on; warp it north-up first (Raster > "
                                                 f"Projections > Warp).")
    return info


def chip_jobs(info: RasterInfo, geometries, ids, properties, guides=None) -> list:
    """Server and endpoint modes: each region (layer CRS) with its pixel bounds on the raster, clipped to it (as
    mgimm_core/regions.py place_region clips it), for server_chips.describe_chips; with `guides`
    (guide_items, raster CRS) each region's job carries those whose box meets the region's: the chip
    has the raster's CRS and a geotransform placing it on the raster, so the server maps them onto
    the chip's pixels as a worker maps them onto the raster's."""
    a, b, c, d, e, f = inverse_geotransform(info.geotransform)
    to_pixels = QTransform(a, d, b, e, c, f)  # x' = a x + b y + c, y' = d x + e y + f
    raster_box = QgsGeometry.fromRect(QgsRectangle(0, 0, info.width, info.height))
    gt = info.geotransform
    extent = QgsGeometry.fromRect(QgsRectangle(gt[0], gt[3] + info.height * gt[5], gt[0] + info.width * gt[1], gt[3]))
    jobs = []
    for geometry, rid, props in zip(geometries, ids, properties):
        pixels = QgsGeometry(geometry)
        pixels.transform(to_pixels)
        inside = pixels.intersection(raster_box)
        if inside.isEmpty() or inside.area() == 0:
            bounds, share, clipped = None, 0.0, geometry.asWkt()
        else:
            box = inside.boundingBox()
            bounds = (box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum())
            share = inside.area() / pixels.area() if pixels.area() > 0 else 1.0
            clipped = geometry.intersection(extent).asWkt() if share < 1.0 else geometry.asWkt()
        near = None
        if guides is not None:
            box = geometry.boundingBox()
            near = [g for g in guides if QgsGeometry.fromWkt(g["wkt"]).boundingBox().intersects(box)]
        jobs.append(ChipJob(str(rid), geometry.asWkt(), clipped, bounds, share, dict(props), near))
    return jobs


def raster_source(layer: QgsRasterLayer, geometries, *, embed: bool, canvas_units_per_pixel: float = None) -> dict:
    """The request's raster part: {"raster": path} for local files, else a rendered chip covering
    `geometries` (layer CRS) as {"raster": temp path} (embed=False, worker mode) or
    {"raster_b64": ...} (embed=True: server and endpoint modes, PluginSettings.cuts_chips), plus
    "raster_name" and, for chips, "_temp" (path to delete when done). A local file with embed=True
    goes region by region instead: its {"_raster": RasterInfo} here, and the caller adds
    "_chip_jobs" (server_chips.py)."""
    path = local_raster_path(layer)
    if path is not None:
        if embed:
            return {"_raster": raster_info(path), "raster_name": os.path.realpath(path)}
        return {"raster": path}
    extent = QgsRectangle()
    extent.setMinimal()
    for geometry in geometries:
        extent.combineExtentWith(geometry.boundingBox())
    units = layer.rasterUnitsPerPixelX() if layer.dataProvider().capabilities() & layer.dataProvider().Size else 0
    units = units or canvas_units_per_pixel or max(extent.width(), extent.height()) / 512
    margin = 2 * units
    extent.grow(margin)
    chip = render_chip(layer, extent, units)
    source = {"raster_name": layer.name(), "_temp": chip}
    if embed:
        with open(chip, "rb") as handle:
            source["raster_b64"] = base64.b64encode(handle.read()).decode("ascii")
    else:
        source["raster"] = chip
    return source


def guide_items(guide_layer, raster: QgsRasterLayer, regions) -> list:
    """The guide layer's polygons near `regions` (raster CRS) as the request's inline `guides`:
    {"id", "wkt" in the raster's CRS, "properties"}, ids as the core reads a layer file (its `id`
    attribute, else the feature's 0-based position), so a guided request names the objects the
    CLI's `describe --guide FILE` names. Only features whose box meets a region's box are sent
    (the server keeps those whose centre lies inside a region). With an `id` field, only the
    features near the regions are read (the layer's spatial index, not a whole footprint layer on
    the main thread); a feature without an id there needs its position, so the layer is then read
    whole."""
    crs = check_crs(raster)
    source_crs = guide_layer.sourceCrs()      # a QgsVectorLayer or a Processing feature source
    transform = QgsCoordinateTransform(source_crs, crs, QgsProject.instance())
    near = [g.boundingBox() for g in regions]
    if "id" in guide_layer.fields().names() and near:
        box = QgsRectangle(near[0])
        for other in near[1:]:
            box.combineExtentWith(other)
        if source_crs != crs:
            box = transform.transformBoundingBox(box, QgsCoordinateTransform.ReverseTransform)
        items = _guide_items(guide_layer, transform, crs, near, QgsFeatureRequest().setFilterRect(box))
        if items is not None:
            return items
    items = _guide_items(guide_layer, transform, crs, near, QgsFeatureRequest())
    assert items is not None                  # positions are known when the whole layer is read
    return items


def _guide_items(guide_layer, transform, crs, near, request: QgsFeatureRequest) -> list | None:
    """guide_items over the features of `request`; None when a filtered read meets a feature
    without an id (its position in the layer is unknown there)."""

    filtered = not request.filterRect().isNull()
    names = guide_layer.fields().names()
    items = []
    for index, feature in enumerate(guide_layer.getFeatures(request)):
        geometry = QgsGeometry(feature.geometry())
        if geometry.isEmpty():
            continue
        if guide_layer.sourceCrs() != crs:
            geometry.transform(transform)
        box = geometry.boundingBox()
        if not any(box.intersects(r) for r in near):
            continue
        value = feature.attribute("id") if "id" in names else None
        if value is None or plain_value(value) is None:
            if filtered:
                return None
            rid = str(index)
        else:
            rid = str(plain_value(value))
        items.append({"id": rid, "wkt": geometry.asWkt(17),
                      "properties": {name: plain_value(feature.attribute(name)) for name in names}})
    return items


def describe_params(layer: QgsRasterLayer, geometries, source_crs: QgsCoordinateReferenceSystem, *,
                    embed: bool = False, properties=None, prompt: str = "", max_new_tokens: int = 200,
                    canvas_units_per_pixel: float = None, first_id: int = 1, ids=None, guide_layer=None,
                    max_guides: int = None, bands=None) -> dict:
    """Plain `describe` params for regions drawn in `source_crs` over `layer` (main thread only).
    guide_layer: a polygon layer (any CRS) whose objects guide the descriptions (inline `guides`
    in the raster's CRS; with embed each region's chip request gets those near it); bands: the
    1-based red, green, blue bands (request_bands), None for the raster's own."""
    in_layer_crs = to_layer_crs(geometries, source_crs, layer)
    params = raster_source(layer, in_layer_crs, embed=embed, canvas_units_per_pixel=canvas_units_per_pixel)
    properties = properties or [{} for _ in in_layer_crs]
    ids = list(ids) if ids is not None else [str(first_id + i) for i in range(len(in_layer_crs))]
    guides = None if guide_layer is None else guide_items(guide_layer, layer, in_layer_crs)
    if guides is not None:
        params["guides"] = guides
        if max_guides:
            params["max_guides"] = int(max_guides)
    if "_raster" in params:
        params["_chip_jobs"] = chip_jobs(params["_raster"], in_layer_crs, ids, properties, guides)
    params.update({
        "regions": [{"id": rid, "wkt": g.asWkt(), "properties": dict(p)}
                    for rid, g, p in zip(ids, in_layer_crs, properties)],
        "crs": crs_text(layer.crs()),
        "bands": list(bands) if bands else None,
        "prompt": prompt or None,
        "max_new_tokens": int(max_new_tokens),
        "thumbnail": True,
    })
    return params
