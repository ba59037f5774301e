"""Server and endpoint modes for local rasters: each region goes as its own small GeoTIFF chip.

The chip is the window the geo core would read for the region (chips.py), cut here with QGIS's GDAL
(osgeo.gdal; never rasterio or mgimm_core), with the raster's CRS, nodata, mask or alpha, colour
interpretation and palette, so a request's size depends on the regions, not the raster. Up to
CHIPS_PER_REQUEST regions go in one `describe` request, each with its chip as its own `raster_b64`
(per-region chips, docs/protocol.md), so the server describes them in one model batch, not one
request and one batch per region; the server places each region on its chip and finds the chip
itself to be its window, so it reads the same pixels a worker reads from the whole file.

One loop for both modes, parametrised by the client only: an HttpClient to `mgimm-geo serve`
(server mode) or the local worker that asks an OpenAI-compatible endpoint (endpoint mode,
endpoint_mode.py). The worker and the server answer with the same request handlers, so both modes
give the same entries, error rows and results layer.

No Qt here: `describe_chips` runs in a background thread (a QgsTask or a Processing algorithm).
The regions are prepared on the main thread by request_data.py `chip_jobs`.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional

from osgeo import gdal

from .chips import ChipPlan, ChipSettings, chip_geotransform, inner_read, server_chip
from .client import ClientError

#: the chip's encoding: lossless and small (a chip is at most the model's input size square)
CHIP_OPTIONS = ["COMPRESS=DEFLATE", "TILED=NO", "INTERLEAVE=BAND"]
#: regions per server request (as the worker's chunks): one round trip and one model batch for
#: many chips, and a cancel still keeps the requests that finished
CHIPS_PER_REQUEST = 16
#: a request stops taking chips past this many base64 bytes, well inside the server's default
#: 64 MB request limit (full-resolution chips can be up to ~16 MB each)
MAX_REQUEST_CHARS = 24_000_000
_REGION_ERRORS = ("region_outside", "region_nodata", "region_too_small", "region_geometry")


@dataclass
class ChipJob:
    """One region, prepared on the main thread (request_data.py chip_jobs)."""

    id: str
    wkt: str                         # the region in the raster's CRS
    clipped_wkt: str                 # the same clipped to the raster's extent
    bounds: Optional[tuple]          # (minx, miny, maxx, maxy) of the clipped region in pixels; None: outside
    share: float = 1.0               # share of the region's area on the raster
    properties: dict = field(default_factory=dict)
    guides: Optional[list] = None    # guided requests: the guide objects near it ({"id", "wkt", ...}, raster CRS)


@dataclass
class RasterInfo:
    path: str
    width: int
    height: int
    geotransform: tuple


def chip_settings(client) -> ChipSettings:
    """The model's chip settings as the server or worker reports them (cached on the client):
    `chip_settings`, which loads no model; servers older than that request answer `hello` with the
    same fields."""
    cached = getattr(client, "_mgimm_chip_settings", None)
    if cached is not None:
        return cached
    try:
        reply = client.request("chip_settings")
    except ClientError as exc:
        if exc.code != "bad_request":
            raise
        reply = client.request("hello")
    settings = ChipSettings.from_reply(reply)
    client._mgimm_chip_settings = settings
    return settings


def _mask_kind(band: gdal.Band) -> str:
    """The core's nodata policy (mgimm_core/scene.py _nodata_policy) for the first band."""
    if band.GetNoDataValue() is not None:
        return "nodata"
    flags = band.GetMaskFlags()
    if flags & gdal.GMF_ALPHA:
        return "alpha"
    if flags & gdal.GMF_PER_DATASET and not flags & gdal.GMF_ALL_VALID:
        return "mask"
    return "none"


def cut_chip(dataset: gdal.Dataset, plan: ChipPlan) -> bytes:
    """GeoTIFF bytes of `plan`'s window, read as mgimm_core/scene.py Scene.read reads it: the whole
    window decimated to the read shape in one GDAL read when it lies on the raster, else the part on
    the raster on its own sub-grid and the rest marked invalid (nodata, alpha 0 or a mask)."""
    width, height, count = dataset.RasterXSize, dataset.RasterYSize, dataset.RasterCount
    first = dataset.GetRasterBand(1)
    kind = _mask_kind(first)
    dtype = first.DataType
    read = plan.read
    inside = plan.inside_scene(width, height)
    need_mask = kind == "mask" or (kind == "none" and not inside)
    path = f"/vsimem/mgimm_chip_{uuid.uuid4().hex}.tif"
    gdal.SetThreadLocalConfigOption("GDAL_TIFF_INTERNAL_MASK", "YES")
    try:
        chip = gdal.GetDriverByName("GTiff").Create(path, read, read, count, dtype, CHIP_OPTIONS)
        chip.SetProjection(dataset.GetProjection())
        chip.SetGeoTransform(chip_geotransform(dataset.GetGeoTransform(), plan))
        if need_mask:
            chip.CreateMaskBand(gdal.GMF_PER_DATASET)
        split = None if inside else inner_read(plan, width, height)
        for index in range(1, count + 1):
            source, target = dataset.GetRasterBand(index), chip.GetRasterBand(index)
            target.SetColorInterpretation(source.GetColorInterpretation())
            nodata = source.GetNoDataValue()
            if nodata is not None:
                target.SetNoDataValue(nodata)
            table = source.GetColorTable()
            if table is not None:
                target.SetColorTable(table)
            if inside:
                target.WriteRaster(0, 0, read, read, source.ReadRaster(plan.col_off, plan.row_off, plan.side,
                                                                        plan.side, read, read))
                continue
            target.Fill(nodata if nodata is not None else 0)
            if split is not None:
                (col, row, w, h), (c0, r0, c1, r1) = split
                target.WriteRaster(c0, r0, c1 - c0, r1 - r0, source.ReadRaster(col, row, w, h, c1 - c0, r1 - r0))
        if need_mask:
            mask = chip.GetRasterBand(1).GetMaskBand()
            if inside:
                mask.WriteRaster(0, 0, read, read, first.GetMaskBand().ReadRaster(
                    plan.col_off, plan.row_off, plan.side, plan.side, read, read))
            else:
                mask.Fill(0)
                if split is not None:
                    (col, row, w, h), (c0, r0, c1, r1) = split
                    data = (first.GetMaskBand().ReadRaster(col, row, w, h, c1 - c0, r1 - r0) if kind == "mask"
                            else b"\xff" * ((c1 - c0) * (r1 - r0)))
                    mask.WriteRaster(c0, r0, c1 - c0, r1 - r0, data)
        chip = None  # closes and writes the file
        handle = gdal.VSIFOpenL(path, "rb")
        try:
            gdal.VSIFSeekL(handle, 0, 2)
            size = gdal.VSIFTellL(handle)
            gdal.VSIFSeekL(handle, 0, 0)
            return bytes(gdal.VSIFReadL(1, size, handle))
        finally:
            gdal.VSIFCloseL(handle)
    finally:
        gdal.Unlink(path)
        gdal.SetThreadLocalConfigOption("GDAL_TIFF_INTERNAL_MASK", None)


def outside_entry(job: ChipJob, name: str) -> dict:
    """The protocol's error entry for a region with nothing on the raster (no chip to send)."""
    return {"id": job.id, "description": None, "attributes": {}, "attribute_text": None, "valid_fraction": None,
            "gsd_m": None, "scene": name, "model": None, "thumbnail_png_b64": None, "properties": job.properties,
            "error": f"region {job.id!r} lies outside the raster {name}; draw it over the raster.",
            "error_code": "region_outside"}


def describe_chips(client, raster: RasterInfo, jobs, params: dict, progress: Callable = None,
                   cancelled: Callable = None) -> dict:
    """The regions' chips in `describe` requests of up to CHIPS_PER_REQUEST regions each (per-region
    `raster_b64`) to `client` (the server's, or the endpoint mode's worker); the answer has the shape
    of a `describe` result, plus `cancelled` (True when the user stopped it: the requests that
    finished are kept) and `largest_request_bytes`."""
    started = time.perf_counter()
    progress = progress or (lambda value, message: None)
    cancelled = cancelled or (lambda: False)
    progress(0.0, "asking for the model's chip settings")
    settings = chip_settings(client)
    dataset = gdal.OpenEx(raster.path, gdal.OF_RASTER | gdal.OF_READONLY)
    if dataset is None:
        raise ClientError("scene_unreadable", f"GDAL cannot open {raster.path} ({gdal.GetLastErrorMsg()}).")
    entries: list = []
    largest, result, warnings = 0, {}, []
    total = len(jobs)
    pending = list(jobs)
    try:
        while pending and not cancelled():
            group, chars = [], 0
            while pending and len(group) < CHIPS_PER_REQUEST and (not group or chars < MAX_REQUEST_CHARS):
                job = pending.pop(0)
                if job.bounds is None:
                    entries.append(outside_entry(job, raster.path))
                    continue
                plan, exact = server_chip(job.bounds, scene_width=raster.width, scene_height=raster.height,
                                          settings=settings)
                data = base64.b64encode(cut_chip(dataset, plan)).decode("ascii")
                chars += len(data)
                group.append((job, plan, exact, data))
            if not group:
                continue
            largest = max(largest, chars)
            try:
                result = client.request("describe", _chips_request(params, raster, group), cancelled=cancelled)
            except ClientError as exc:
                if exc.code == "cancelled":
                    break
                if exc.code not in _REGION_ERRORS:
                    raise
                for job, *_ in group:       # every region of the request failed so: each gets the error
                    entries.append(dict(outside_entry(job, raster.path), error=exc.message, error_code=exc.code))
                continue
            for line in result.get("warnings") or []:
                if line not in warnings:
                    warnings.append(line)
            answered = {str(e.get("id")): e for e in result.get("regions") or []}
            for job, plan, exact, data in group:
                entry = answered.get(job.id)
                if entry is None:     # a server/worker that left a region out: its row says so, the others stay
                    entries.append(dict(outside_entry(job, raster.path), error=f"the worker/server did not answer "
                                        f"region {job.id!r}; describe it again.", error_code="internal"))
                    continue
                entry["chip"] = {"window": [plan.col_off, plan.row_off, plan.side, plan.side], "pixels": plan.read,
                                 "exact": exact, "bytes": len(data)}
                clipped = not plan.inside_scene(raster.width, raster.height) and job.share < 1.0
                if clipped and entry.get("valid_fraction") is not None:
                    entry["valid_fraction"] = entry["valid_fraction"] * job.share   # the part off the raster
                    if entry.get("row"):
                        entry["row"]["valid_fraction"] = entry["valid_fraction"]
                entries.append(entry)
            progress(len(entries) / total, f"{len(entries)}/{total} regions")
    finally:
        dataset = None
    return {"regions": entries, "model": result.get("model"), "device": result.get("device"), "output": None,
            "seconds": round(time.perf_counter() - started, 3), "cancelled": len(entries) < total,
            "largest_request_bytes": largest, "warnings": warnings}


def _chips_request(params: dict, raster: RasterInfo, group) -> dict:
    """One `describe` request for (job, plan, exact, base64 chip) tuples: each region with its chip;
    guided jobs' guide objects (those near any of the regions) go once, in the raster's CRS."""
    regions = []
    for job, plan, _, data in group:
        clipped = not plan.inside_scene(raster.width, raster.height) and job.share < 1.0
        regions.append({"id": job.id, "wkt": job.clipped_wkt if clipped else job.wkt, "properties": job.properties,
                        "raster_b64": data, "chip_scale": plan.scale})
    request = dict(params, raster_name=raster.path, regions=regions)
    if any(job.guides is not None for job, *_ in group):
        guides: dict = {}
        for job, *_ in group:
            for guide in job.guides or []:
                guides.setdefault(str(guide["id"]), guide)
        request["guides"] = list(guides.values())
    return request
