"""Processing algorithms: "Describe regions" and "Describe scene tiles" (raster [+ polygons] -> GeoPackage).

Each sends one `describe_file` request (the CLI's `describe` on files) to the configured worker or
server and adds the written layer to the project. Inputs that are not files (a memory or database
polygon layer) are saved to a temporary GeoPackage first; the raster must be a local file (save a web
layer with Raster > Conversion first).
"""

from __future__ import annotations

import json
import os
import tempfile

from qgis.core import (QgsProcessing, QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingParameterEnum, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString,
                       QgsProcessingOutputString, QgsVectorFileWriter)

from .client import ClientError
from .request_data import local_raster_path
from .settings import shared_client

MODES = ["create", "overwrite", "append", "resume"]


def _raster_path(layer, name: str) -> str:
    path = local_raster_path(layer)
    if path is None:
        raise QgsProcessingException(f"{name}: \"{layer.name()}\" is not a local raster file (provider "
                                     f"{layer.providerType()}); save it as a GeoTIFF (Raster > Conversion > "
                                     f"Translate) and use that file.")
    return path


def _vector_path(algorithm, parameters, context, feedback) -> str:
    """The AOI as a file the worker can read: the layer's own file, or a temporary GeoPackage."""
    layer = algorithm.parameterAsVectorLayer(parameters, "AOI", context)
    selected_only = False
    if layer is not None:
        source = layer.source().split("|")
        definition = parameters.get("AOI")
        selected_only = getattr(definition, "selectedFeaturesOnly", False)
        if (layer.providerType() == "ogr" and os.path.isfile(source[0]) and not selected_only
                and layer.subsetString() == ""):
            layer_name = [p.split("=", 1)[1] for p in source[1:] if p.startswith("layername=")]
            return source[0], (layer_name[0] if layer_name else None)
    source = algorithm.parameterAsSource(parameters, "AOI", context)
    if source is None:
        raise QgsProcessingException("AOI: no polygon layer given.")
    path = os.path.join(tempfile.mkdtemp(prefix="mgimm_aoi_"), "aoi.gpkg")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "aoi"
    writer = QgsVectorFileWriter.create(path, source.fields(), source.wkbType(), source.sourceCrs(),
                                        context.transformContext(), options)
    for feature in source.getFeatures():
        if feedback.isCanceled():
            break
        writer.addFeature(feature)
    del writer
    feedback.pushInfo(f"AOI saved to {path} for the worker")
    return path, "aoi"


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
        self.addParameter(QgsProcessingParameterString("BANDS", "Bands (1-based, comma separated; empty: "
                                                       "the scene's RGB)", defaultValue="", optional=True))
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
            bands = [int(b) for b in bands_text.replace(" ", "").split(",")] if bands_text else None
        except ValueError:
            raise QgsProcessingException(
                f"BANDS: {bands_text!r} is not a list of band numbers; give e.g. 3,2,1.") from None
        params = {"scenes": [_raster_path(raster, "INPUT")], "output": os.path.abspath(output),
                  "mode": MODES[self.parameterAsEnum(parameters, "MODE", context)], "bands": bands,
                  "prompt": self.parameterAsString(parameters, "PROMPT", context) or None, "tiles": self.tiles}
        return params

    def processAlgorithm(self, parameters, context, feedback):
        params = self._params(parameters, context, feedback)
        client = shared_client()

        def progress(fraction, message):
            feedback.setProgress(100.0 * fraction)
            if message:
                feedback.setProgressText(message)

        try:
            summary = client.request("describe_file", params, progress=progress, cancelled=feedback.isCanceled)
        except ClientError as exc:
            if exc.code == "cancelled":
                feedback.reportError(exc.message)
                return {"OUTPUT": params["output"], "SUMMARY": ""}
            raise QgsProcessingException(exc.message) from None
        layer_name = "tiles" if self.tiles else "regions"
        if context.project() is not None and os.path.exists(params["output"]):
            details = QgsProcessingContext.LayerDetails(f"MGIMM {layer_name}", context.project(), "OUTPUT")
            context.addLayerToLoadOnCompletion(f"{params['output']}|layername={layer_name}", details)
        return {"OUTPUT": params["output"], "SUMMARY": json.dumps(summary)}


class DescribeRegionsAlgorithm(_DescribeAlgorithm):
    def name(self):
        return "describe_regions"

    def displayName(self):
        return "Describe regions"

    def shortHelpString(self):
        return ("Describes each polygon of AOI over the raster with MGIMM (a description and attributes per "
                "region) and writes the CLI's `regions` layer to a GeoPackage. Runs in the worker or server "
                "set in MGIMM settings.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster (a local file)"))
        self.addParameter(QgsProcessingParameterFeatureSource("AOI", "Regions (polygons)",
                                                              [QgsProcessing.TypeVectorPolygon]))
        self._add_common()

    def _params(self, parameters, context, feedback):
        params = super()._params(parameters, context, feedback)
        params["aoi"], params["layer"] = _vector_path(self, parameters, context, feedback)
        return params


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
