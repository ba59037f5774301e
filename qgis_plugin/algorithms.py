"""Processing algorithms: "Describe regions" and "Describe scene tiles" (raster [+ polygons] -> GeoPackage).

Each sends one `describe_file` request (the CLI's `describe` on files) to the configured worker or
server and adds the written layer to the project. With a worker, inputs that are not files (a memory
or database polygon layer, selected features only) are saved to a temporary GeoPackage first. With a
server, which cannot see our files, and in endpoint mode (the worker asks an OpenAI-compatible
endpoint), "Describe regions" sends each feature as its own chip of the raster (server_chips.py,
the panel's path) and writes the regions layer here. The raster must be a local file (save a web
layer with Raster > Conversion first).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from qgis.core import (NULL, QgsCoordinateTransform, QgsGeometry, QgsProcessing, QgsProcessingAlgorithm,
                       QgsProcessingContext, QgsProcessingException,
                       QgsProcessingParameterEnum, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString,
                       QgsProcessingLayerPostProcessorInterface, QgsProcessingOutputString,
                       QgsVectorFileWriter, QgsVectorLayer)

from qgis.PyQt.QtCore import QObject, pyqtSignal

from .client import ClientError
from .messages import qgis_words
from .request_data import local_raster_path, request_bands
from .settings import PluginSettings, shared_client

MODES = ["create", "overwrite", "append", "resume"]


def _raster_path(layer, name: str) -> str:
    path = local_raster_path(layer)
    if path is None:
        raise QgsProcessingException(f"{name}: \"{layer.name()}\" is not a local raster file (provider "
                                     f"{layer.providerType()}); save it as a GeoTIFF (Raster > Conversion > "
                                     f"Translate) and use that file.")
    return path


def _vector_path(algorithm, parameters, context, feedback, name: str = "AOI") -> str:
    """The AOI (or the GUIDE layer) as a file the worker can read: the layer's own file, or a
    temporary GeoPackage."""
    layer = algorithm.parameterAsVectorLayer(parameters, name, context)
    selected_only = False
    if layer is not None:
        source = layer.source().split("|")
        definition = parameters.get(name)
        selected_only = getattr(definition, "selectedFeaturesOnly", False)
        if (layer.providerType() == "ogr" and os.path.isfile(source[0]) and not selected_only
                and layer.subsetString() == ""):
            layer_name = [p.split("=", 1)[1] for p in source[1:] if p.startswith("layername=")]
            return source[0], (layer_name[0] if layer_name else None)
    source = algorithm.parameterAsSource(parameters, name, context)
    if source is None:
        raise QgsProcessingException(f"{name}: no polygon layer given.")
    path = os.path.join(tempfile.mkdtemp(prefix="mgimm_aoi_"), f"{name.lower()}.gpkg")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = name.lower()
    writer = QgsVectorFileWriter.create(path, source.fields(), source.wkbType(), source.sourceCrs(),
                                        context.transformContext(), options)
    for feature in source.getFeatures():
        if feedback.isCanceled():
            break
        writer.addFeature(feature)
    del writer
    feedback.pushInfo(f"{name} saved to {path} for the worker")
    return path, name.lower()


class _DefaultStyle(QgsProcessingLayerPostProcessorInterface):
    """Processing loads result layers without their default style; this applies the one stored in
    the GeoPackage's `layer_styles` (the CLI's and the plugin's labelled look)."""

    instance = None  # Processing keeps only a pointer: the object must stay alive until it runs

    def postProcessLayer(self, layer, context, feedback):
        if isinstance(layer, QgsVectorLayer):
            from .layer import keep_results_on_top, style_layer

            _, ok = layer.loadDefaultStyle()
            if not ok:
                style_layer(layer)
            layer.setCustomProperty("mgimm_geo/result", True)   # kept above rasters added later
            layer.triggerRepaint()
            keep_results_on_top(context.project())

    @staticmethod
    def create():
        _DefaultStyle.instance = _DefaultStyle()
        return _DefaultStyle.instance


class _CancelledRunLoader(QObject):
    """Loads the output of a cancelled run into the project, on the main thread (a signal emitted from
    the algorithm's thread is queued there): Processing loads no result layer once its feedback is
    cancelled (processing/gui/Postprocessing.py), but the output keeps every batch that finished."""

    load = pyqtSignal(str, str)

    def __init__(self):
        super().__init__()
        self.load.connect(self._load)

    @staticmethod
    def _load(uri: str, name: str) -> None:
        from qgis.core import QgsProject

        from .layer import keep_results_on_top, style_layer

        layer = QgsVectorLayer(uri, name, "ogr")
        if not layer.isValid():
            return
        _, ok = layer.loadDefaultStyle()
        if not ok:
            style_layer(layer)
        layer.setCustomProperty("mgimm_geo/result", True)
        QgsProject.instance().addMapLayer(layer)
        keep_results_on_top()


#: made when the provider imports this module, on QGIS's main thread
CANCELLED_RUN_LOADER = _CancelledRunLoader()


class _DescribeAlgorithm(QgsProcessingAlgorithm):
    tiles = False

    def group(self):
        return "Describe"

    def groupId(self):
        return "describe"

    def createInstance(self):
        return type(self)()

    def _add_common(self):
        self.addParameter(QgsProcessingParameterEnum("MODE", "If the output exists", MODES, defaultValue=0))
        self.addParameter(QgsProcessingParameterString("BANDS", "Bands as red, green, blue (e.g. 4,3,2; empty: the "
                                                       "panel's choice)", defaultValue="", optional=True))
        self.addParameter(QgsProcessingParameterString("PROMPT", "Prompt (empty: the model's)", defaultValue="",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT", "Output GeoPackage",
                                                                "GeoPackage (*.gpkg)"))
        self.addOutput(QgsProcessingOutputString("SUMMARY", "Summary (JSON)"))

    def _params(self, parameters, context, feedback) -> dict:
        raster = self.parameterAsRasterLayer(parameters, "INPUT", context)
        if raster is None:
            raise QgsProcessingException("INPUT: no raster layer given.")
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        if not output.lower().endswith(".gpkg"):
            output += ".gpkg"
        bands_text = self.parameterAsString(parameters, "BANDS", context).strip()
        try:
            bands = ([int(b) for b in bands_text.replace(" ", "").split(",")] if bands_text
                     else request_bands(raster))      # the panel's choice for this layer, or its default
        except ValueError:
            raise QgsProcessingException(
                f"BANDS: {bands_text!r} is not a list of band numbers; give e.g. 3,2,1.") from None
        params = {"scenes": [_raster_path(raster, "INPUT")], "output": os.path.abspath(output),
                  "mode": MODES[self.parameterAsEnum(parameters, "MODE", context)], "bands": bands,
                  "prompt": self.parameterAsString(parameters, "PROMPT", context) or None, "tiles": self.tiles}
        return params

    def _run(self, params, parameters, context, feedback, client, progress) -> dict:
        request = {k: v for k, v in params.items() if not k.startswith("_")}
        try:
            return client.request("describe_file", request, progress=progress, cancelled=feedback.isCanceled)
        finally:
            for folder in params.get("_temp_dirs", ()):
                shutil.rmtree(folder, ignore_errors=True)   # the AOI / guide layer saved for the worker

    def processAlgorithm(self, parameters, context, feedback):
        params = self._params(parameters, context, feedback)
        client = shared_client()

        def progress(fraction, message):
            feedback.setProgress(100.0 * fraction)
            if message:
                feedback.setProgressText(message)

        summary = {}
        try:
            summary = self._run(params, parameters, context, feedback, client, progress)
        except ClientError as exc:
            if exc.code != "cancelled":
                raise QgsProcessingException(qgis_words(exc.message)) from None
            feedback.reportError(qgis_words(exc.message))   # what finished is in the output: loaded below
        for line in summary.get("warnings") or []:
            feedback.pushWarning(qgis_words(line))
        layer_name = "tiles" if self.tiles else "regions"
        uri = f"{params['output']}|layername={layer_name}"
        if context.project() is not None and os.path.exists(params["output"]):
            if feedback.isCanceled():        # Processing would load nothing: the rows kept are loaded here
                CANCELLED_RUN_LOADER.load.emit(uri, f"MGIMM {layer_name}")
            else:
                details = QgsProcessingContext.LayerDetails(f"MGIMM {layer_name}", context.project(), "OUTPUT")
                details.setPostProcessor(_DefaultStyle.create())
                context.addLayerToLoadOnCompletion(uri, details)
        return {"OUTPUT": params["output"], "SUMMARY": json.dumps(summary) if summary else ""}


def _chip_regions(algorithm, parameters, context, feedback, params: dict, client) -> dict:
    """Server and endpoint modes (PluginSettings.cuts_chips): every feature of AOI (selected ones
    only when asked) as its own chip of the raster (server_chips.py), so neither the server nor the
    endpoint mode's worker reads our file; the regions layer is written here with the CLI's fields
    and the input attributes. Returns the summary."""
    from .layer import feature_values, write_regions_file
    from .request_data import RequestError, chip_jobs, crs_text, raster_info
    from .server_chips import describe_chips

    raster = algorithm.parameterAsRasterLayer(parameters, "INPUT", context)
    source = algorithm.parameterAsSource(parameters, "AOI", context)
    if source is None:
        raise QgsProcessingException("AOI: no polygon layer given.")
    settings = PluginSettings.load()
    to_raster = QgsCoordinateTransform(source.sourceCrs(), raster.crs(), context.transformContext())
    names = source.fields().names()
    id_field = "id" if "id" in names else None
    geometries, in_raster, ids, properties = [], [], [], []
    for index, feature in enumerate(source.getFeatures()):
        geometry = QgsGeometry(feature.geometry())
        geometries.append(QgsGeometry(geometry))
        if source.sourceCrs() != raster.crs():
            geometry.transform(to_raster)
        in_raster.append(geometry)
        value = feature[id_field] if id_field else None
        ids.append(str(index) if value is None or value == NULL else str(value))
        properties.append({name: _plain(feature[name]) for name in names})
    if not geometries:
        raise QgsProcessingException("AOI: no features (or none selected).")
    try:
        info = raster_info(params["scenes"][0])
    except RequestError as exc:
        raise QgsProcessingException(qgis_words(str(exc))) from None
    jobs = chip_jobs(info, in_raster, ids, properties)
    request = {"crs": crs_text(raster.crs()), "bands": params["bands"], "prompt": params["prompt"],
               "max_new_tokens": settings.max_new_tokens,
               "thumbnail": False, "attributes": True}

    def progress(fraction, message):
        feedback.setProgress(100.0 * fraction)
        if message:
            feedback.setProgressText(message)

    try:
        result = describe_chips(client, info, jobs, request, progress=progress, cancelled=feedback.isCanceled)
    except ClientError as exc:
        raise QgsProcessingException(qgis_words(exc.message)) from None
    entries = {e["id"]: e for e in result["regions"]}
    items = []
    for geometry, rid, props in zip(geometries, ids, properties):
        entry = entries.get(rid)
        if entry is None:
            continue                       # cancelled before this one
        values = feature_values(entry, scene=info.path, prompt=params["prompt"], run_id="qgis-processing")
        items.append((geometry, values, props))
    try:
        written = write_regions_file(params["output"], params["mode"], source.sourceCrs(), source.fields(), items)
    except OSError as exc:
        raise QgsProcessingException(f"OUTPUT: {exc}") from None
    failed = sum(1 for e in result["regions"] if e.get("error"))
    for entry in result["regions"]:
        if entry.get("error"):
            feedback.reportError(qgis_words(f"Region {entry['id']}: {entry['error']}"))
    if result["cancelled"]:
        feedback.reportError(f"Cancelled: the {len(items)} region(s) finished are written to {params['output']}; "
                             f"run again with \"resume\" to finish.")
    return {"output": params["output"], "mode": params["mode"], "model": result["model"],
            "device": result["device"], "engine": f"{settings.mode}, region chips", "scenes": 1, "unit": "regions",
            "described": len(items) - failed, "failed": failed, "written": written,
            "cancelled": result["cancelled"], "seconds": result["seconds"],
            "largest_request_bytes": result["largest_request_bytes"], "warnings": result["warnings"]}


def _plain(value):
    """A feature attribute as JSON-ready data (NULL -> None, dates -> ISO text)."""
    if value is None or value == NULL:
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "toString"):
        return value.toString("yyyy-MM-ddTHH:mm:ss") if hasattr(value, "toPyDateTime") else value.toString()
    return str(value)


class DescribeRegionsAlgorithm(_DescribeAlgorithm):
    def name(self):
        return "describe_regions"

    def displayName(self):
        return "Describe regions"

    def shortHelpString(self):
        return ("Describes each polygon of AOI over the raster with MGIMM (a description and attributes per "
                "region) and writes the CLI's `regions` layer to a GeoPackage. With GUIDE (a polygon layer of "
                "objects, any CRS; worker mode) the objects inside each region guide its description and get "
                "their own attributes in an `objects` layer linked by parent_id (`mgimm-geo describe --guide`). "
                "Runs in the worker or server set in MGIMM settings.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster (a local file)"))
        self.addParameter(QgsProcessingParameterFeatureSource("AOI", "Regions (polygons)",
                                                              [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "GUIDE", "Guide objects (polygons: footprints, detections; optional)", [QgsProcessing.TypeVectorPolygon],
            optional=True))
        self._add_common()

    def _params(self, parameters, context, feedback):
        params = super()._params(parameters, context, feedback)
        guided = parameters.get("GUIDE") not in (None, "")
        settings = PluginSettings.load()
        if settings.cuts_chips:
            if guided and settings.mode == "endpoint":
                raise QgsProcessingException(
                    "GUIDE: guide objects cannot be sent to an endpoint's model yet; describe the guided run "
                    "with a local model (MGIMM settings > mode: worker).")
            if guided:
                raise QgsProcessingException(
                    "GUIDE: guide objects in Processing need the local worker (MGIMM settings > mode: worker); "
                    "with a server, use the panel's \"Describe with guide layer\" on selected features.")
            return params
        params["_temp_dirs"] = []
        params["aoi"], params["layer"] = _vector_path(self, parameters, context, feedback)
        if guided:
            params["guide"], params["guide_layer"] = _vector_path(self, parameters, context, feedback, "GUIDE")
        for key in ("aoi", "guide"):
            if params.get(key) and os.path.basename(os.path.dirname(params[key])).startswith("mgimm_aoi_"):
                params["_temp_dirs"].append(os.path.dirname(params[key]))
        return params

    def _run(self, params, parameters, context, feedback, client, progress):
        if PluginSettings.load().cuts_chips:
            return _chip_regions(self, parameters, context, feedback, params, client)
        return super()._run(params, parameters, context, feedback, client, progress)


class DescribeTilesAlgorithm(_DescribeAlgorithm):
    tiles = True

    def name(self):
        return "describe_tiles"

    def displayName(self):
        return "Describe scene tiles"

    def shortHelpString(self):
        return ("Cuts the raster into square tiles (TILE_SIZE pixels) and describes each with MGIMM, writing "
                "the CLI's `tiles` layer to a GeoPackage. Runs in the worker or server set in MGIMM settings.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster (a local file)"))
        self.addParameter(QgsProcessingParameterNumber("TILE_SIZE", "Tile size (pixels)",
                                                       QgsProcessingParameterNumber.Integer, 512, False, 16, 65536))
        self._add_common()

    def _params(self, parameters, context, feedback):
        params = super()._params(parameters, context, feedback)
        params["tile_size"] = self.parameterAsInt(parameters, "TILE_SIZE", context)
        params["aoi"] = None
        return params
