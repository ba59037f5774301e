"""The Python API for notebooks: `describe(scenes, aois) -> GeoDataFrame`, on the CLI's path.

    >>> import mgimm_core
    >>> rows = mgimm_core.describe("scene.tif", "aoi.geojson")          # the demo model
    >>> rows[["region_id", "object", "color", "description", "geometry"]]

Each call runs the files job (`mgimm_core.jobs.run_files_job`) exactly as `mgimm-geo describe` does,
into `output` (or a temporary GeoPackage), and reads the layer back with geopandas. AOIs given as a
GeoDataFrame or shapely geometries are first written to a temporary GeoPackage, so they are read by
the same AOI reader as files. Load the model once with `load_model` to reuse it across calls.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, cast

from mgimm_core.engines import LoadOptions, open_engine
from mgimm_core.errors import OptionsError
from mgimm_core.jobs import AOISource, FilesJob, run_files_job
from mgimm_core.pipeline import DescribeOptions, TileOptions

if TYPE_CHECKING:
    from collections.abc import Sequence
    from geopandas import GeoDataFrame

    from mgimm_core.engines import Engine


def load_model(model_dir: str | os.PathLike[str] | None = None, *, device: str = "auto", max_new_tokens: int = 200,
               threads: int | None = None, compile: bool = False, agree: bool = True, region_as: str | None = None,
               served_model: str | None = None, family: str | None = None, concurrency: int = 4) -> Engine:
    """A local engine for `model_dir` (default: the demo model) to pass as `describe(model=...)`;
    its weights load on the first region and stay loaded for later calls. agree=False: descriptions
    decoded freely, not held to the attribute answers (LoadOptions.agree). region_as: "text", "outline"
    or "crop" (default: the model family's way; OptionsError when the family cannot take it).

    model_dir may be an OpenAI-compatible endpoint's base URL ("http://host:8000/v1"): its served
    model (`served_model`, default the only one listed; `family`, default guessed from the id) is
    asked `concurrency` regions at a time; the key comes from MGIMM_API_KEY or OPENAI_API_KEY."""
    from mgimm_core.endpoint import EndpointOptions

    target = model_dir if isinstance(model_dir, str) or model_dir is None else os.fspath(model_dir)
    return open_engine("local", target, LoadOptions(
        device=device, max_new_tokens=max_new_tokens, compile=compile, threads=threads, agree=agree,
        region_as=region_as, endpoint=EndpointOptions(served_model=served_model, family=family,
                                                      concurrency=concurrency)))


def _aoi_source(aois: Any, directory: str, *, crs: Any, layer: str | None, buffer: float | None,
                name: str = "aois") -> AOISource | None:
    """An AOISource for a path/WKT/bbox string, a GeoDataFrame/GeoSeries or shapely geometries."""
    if aois is None:
        return None
    if isinstance(aois, (str, os.PathLike)):
        return AOISource(os.fspath(aois), layer=layer, crs=None if crs is None else str(crs), buffer=buffer)
    import geopandas
    import shapely

    if isinstance(aois, shapely.Geometry):
        aois = [aois]
    if isinstance(aois, geopandas.GeoSeries):
        aois = geopandas.GeoDataFrame(geometry=aois)
    if not isinstance(aois, geopandas.GeoDataFrame):
        geometries = list(aois) if isinstance(aois, Iterable) else None
        if not geometries or not all(isinstance(g, shapely.Geometry) for g in geometries):
            raise OptionsError("aois: give a vector file path, WKT or 'bbox:...' text, a GeoDataFrame/GeoSeries, "
                               "or shapely geometries (with crs=...).", "aois")
        aois = geopandas.GeoDataFrame(geometry=geometries)
    if crs is not None:
        aois = aois.set_crs(crs, allow_override=True)
    if aois.crs is None:
        raise OptionsError("aois have no CRS: give crs='EPSG:xxxx' (the CRS of their coordinates), or set the "
                           "GeoDataFrame's CRS.", "crs")
    path = str(Path(directory) / f"{name}.gpkg")
    aois.to_file(path, layer=name, driver="GPKG", engine="pyogrio")
    return AOISource(path, layer=name, buffer=buffer)


def describe(scenes: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], aois: Any = None, *,
             model: str | os.PathLike[str] | Engine | None = None, tiles: bool = False,
             output: str | os.PathLike[str] | None = None,
             mode: str = "create", crs: Any = None, layer: str | None = None, buffer: float | None = None,
             bands: tuple[int, ...] | None = None, nodata: float | None = None,
             percentiles: tuple[float, float] | None = None, value_range: tuple[float, float] | None = None,
             batch_size: int | None = None,
             prompt: str | None = None, attributes: bool = True, tile_size: int = 512, tile_overlap: int = 0,
             min_valid: float = 0.5, device: str = "auto", max_new_tokens: int = 200,
             threads: int | None = None, guide: Any = None, guide_layer: str | None = None, max_guides: int = 8,
             region_as: str | None = None, served_model: str | None = None, family: str | None = None,
             concurrency: int = 4) -> GeoDataFrame:
    """Describe the AOI regions (or, with tiles=True, every tile) of one or more scenes.

    scenes: a raster path (file, folder of rasters, VRT, GDAL /vsi path) or a list of them.
    aois: a vector file path, WKT or 'bbox:minx,miny,maxx,maxy'; a GeoDataFrame or GeoSeries; or
        shapely geometries with `crs`. Their attributes come back as columns.
    model: a model directory, an endpoint's base URL ("http://host:8000/v1", with served_model,
        family and concurrency as in `load_model`), an engine from `load_model` (reused, not
        closed), or None (demo).
    output: keep the result in this file (.gpkg resumable with mode="resume"); default a
        temporary GeoPackage, removed after reading.
    guide: guide objects (same forms as `aois`): each object inside a region/tile is a region prompt
        of its description (`mgimm-geo describe --guide`); their attributes come back as a
        GeoDataFrame in `.attrs["objects"]` (parent_id links them to the rows).
    region_as: how a region reaches the model, "text", "outline" or "crop" (`--region-as`; default the
        family's way); with an engine from `load_model`, give it there.
    The other options are those of `mgimm-geo describe`. Returns the output layer as a
    GeoDataFrame (geometry in the AOI's CRS; tiles in the scene's), with `summary` in `.attrs`.
    Raises the core's typed errors (mgimm_core.errors), e.g. OptionsError for contradicting options.
    """
    import geopandas

    scene_list = [os.fspath(scenes)] if isinstance(scenes, (str, os.PathLike)) else [os.fspath(s) for s in scenes]
    with tempfile.TemporaryDirectory(prefix="mgimm-api-") as scratch:
        target = os.fspath(output) if output is not None else str(Path(scratch) / "descriptions.gpkg")
        job = FilesJob(scenes=tuple(scene_list), output=target, mode=mode,
                       aoi=_aoi_source(aois, scratch, crs=crs, layer=layer, buffer=buffer),
                       bands=None if bands is None else tuple(bands), nodata=nodata,
                       percentiles=None if percentiles is None else (float(percentiles[0]), float(percentiles[1])),
                       value_range=None if value_range is None else (float(value_range[0]), float(value_range[1])),
                       guide=_aoi_source(guide, scratch, crs=crs, layer=guide_layer, buffer=None, name="guides"),
                       options=DescribeOptions(batch_size=batch_size, prompt=prompt, attributes=attributes,
                                               tiles=TileOptions(tile_size, tile_overlap, min_valid) if tiles
                                               else None, max_guides=max_guides))
        owned = not hasattr(model, "outcomes")
        engine = (load_model(cast("str | os.PathLike[str] | None", model), device=device,
                             max_new_tokens=max_new_tokens, threads=threads, region_as=region_as,
                             served_model=served_model, family=family, concurrency=concurrency)
                  if owned else cast("Engine", model))
        try:
            summary = run_files_job(job, engine)
        finally:
            if owned:
                engine.close()
        layer_name = job.options.unit if target.lower().endswith(".gpkg") else None
        frame = geopandas.read_file(target, layer=layer_name, engine="pyogrio")
        if guide is not None and summary.get("objects"):
            objects = target if layer_name else str(Path(target).with_name(
                f"{Path(target).stem}_objects{Path(target).suffix}"))
            frame.attrs["objects"] = geopandas.read_file(objects, layer="objects" if layer_name else None,
                                                         engine="pyogrio")
    frame.attrs["summary"] = summary
    return frame
