"""mgimm_core.service: the request handlers the worker and the server share, run in-process on
real GeoTIFFs with a tiny random MGIMM saved to disk (its words are random, its plumbing real)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pyogrio
import pyproj
import pytest
import shapely
import shapely.geometry
from rasterio.io import MemoryFile

from mgimm_core.engines import LoadOptions
from mgimm_core.service import (ERROR_CODES, HANDLERS, Service, ServiceError, encode_png, error_payload,
                                thumbnail_png_b64)

UTM = "EPSG:32633"
ORIGIN = (500000.0, 4_500_000.0)   # make_raster's default: 10 m pixels, 64 x 48


def save_tiny_model(tmp_path_factory) -> str:
    """A tiny MGIMM + processor saved once per test session (shared by the worker/serve tests)."""
    directory = tmp_path_factory.getbasetemp() / "tiny_mgimm_model"
    if not (directory / "config.json").is_file():
        from mgimm_core.model.testing_mgimm import tiny_model, tiny_processor

        model = tiny_model()
        model.save_pretrained(directory)
        tiny_processor(model.config).save_pretrained(directory)
    return str(directory)


def lonlat_polygon(x0: float, y0: float, x1: float, y1: float) -> str:
    """WKT in EPSG:4326 of a UTM 33N rectangle (what QGIS sends for a polygon drawn in lon/lat)."""
    to_lonlat = pyproj.Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    ring = [to_lonlat.transform(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
    return "POLYGON ((" + ", ".join(f"{x:.9f} {y:.9f}" for x, y in ring) + "))"


INSIDE = lonlat_polygon(ORIGIN[0] + 100, ORIGIN[1] - 300, ORIGIN[0] + 300, ORIGIN[1] - 100)
OUTSIDE = lonlat_polygon(ORIGIN[0] + 5000, ORIGIN[1] - 300, ORIGIN[0] + 5200, ORIGIN[1] - 100)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    return Service(save_tiny_model(tmp_path_factory), load=LoadOptions(device="cpu", max_new_tokens=6))


def decode_png(b64: str) -> np.ndarray:
    with MemoryFile(base64.b64decode(b64)) as mem, mem.open() as ds:
        assert ds.driver == "PNG"
        return ds.read()


def test_hello_reports_protocol_model_and_device(service):
    result = service.handle("hello")
    assert result["protocol"] == 1
    assert result["model"] == "tiny_mgimm_model"
    assert result["device"] == "cpu"
    assert result["chip_size"] == 32
    assert set(result["types"]) == set(HANDLERS)


def test_describe_lonlat_polygon_on_utm_raster(service, make_raster, tmp_path):
    raster = make_raster(crs=UTM)
    seen = []
    result = service.handle("describe", {
        "raster": raster, "crs": "EPSG:4326", "output": str(tmp_path / "out.gpkg"),
        "regions": [{"id": "a", "wkt": INSIDE, "properties": {"note": "drawn"}},
                    {"id": "b", "wkt": OUTSIDE}]},
        progress=lambda value, message: seen.append(value))
    a, b = result["regions"]
    assert (a["id"], b["id"]) == ("a", "b")                 # request order
    assert a["error"] is None and isinstance(a["description"], str) and a["description"]
    assert isinstance(a["attribute_text"], str)
    assert a["valid_fraction"] == pytest.approx(1.0)
    assert a["gsd_m"] > 0 and a["scene"] == raster and a["properties"] == {"note": "drawn"}
    assert "outside" in b["error"] and b["description"] is None
    assert seen[-1] == 1.0
    pixels = decode_png(a["thumbnail_png_b64"])
    assert pixels.shape[0] == 3 and max(pixels.shape[1:]) <= 256
    json.dumps(result)                                        # JSON-ready as it is
    _, _, _, fields = pyogrio.raw.read(tmp_path / "out.gpkg", layer="regions", read_geometry=False,
                                       columns=["region_id", "error"])
    written = dict(zip(fields[0], fields[1]))
    assert written["a"] is None and "outside" in written["b"]


def test_describe_answers_each_region_as_the_row_its_output_gets(service, make_raster, tmp_path):
    """One row across the process boundary: each entry's `row` is the region's row of the regions
    layer, as the files job writes it to `output` (one builder, one schema; run_id and the write
    time are the writer's), input attributes under their column names; the protocol 1 fields repeat it."""
    raster = make_raster(crs=UTM)
    out = tmp_path / "rows.gpkg"
    result = service.handle("describe", {
        "raster": raster, "crs": "EPSG:4326", "output": str(out), "thumbnail": False,
        "regions": [{"id": "a", "wkt": INSIDE, "properties": {"description": "mine", "n": 2}},
                    {"id": "b", "wkt": OUTSIDE}, {"id": "c", "wkt": "POLYGON ((1 2"}]})
    written = pyogrio.read_dataframe(out, layer="regions", read_geometry=False)
    assert len(written) == 2                                      # the unreadable region is answered only
    for entry in result["regions"]:
        row = entry["row"]
        assert row["region_id"] == entry["id"] and "run_id" not in row
        assert all(row[name] == entry[name] for name in ("description", "scene", "model", "error", "error_code"))
        if entry["id"] == "c":
            assert row["error_code"] == "aoi_error" and row["scene"] == raster
            continue
        (mine,) = written[written["region_id"] == entry["id"]].to_dict("records")
        for name, value in row.items():
            if name != "created":
                assert mine[name] == pytest.approx(value) if isinstance(value, float) else (
                    mine[name] == value or value is None and mine[name] != mine[name]), name   # NaN: a null there
    a = next(e for e in result["regions"] if e["id"] == "a")
    assert a["row"]["in_description"] == "mine" and a["row"]["n"] == 2 and a["properties"]["description"] == "mine"


def test_describe_resume_answers_every_region_and_replaces_its_row(service, make_raster, tmp_path):
    """A describe request's regions are all described and answered; resume replaces their rows."""
    raster, out = make_raster(crs=UTM), tmp_path / "again.gpkg"
    params = {"raster": raster, "output": str(out), "mode": "resume", "thumbnail": False,
              "regions": [{"id": "a", "wkt": INSIDE}]}
    for _ in range(2):
        (entry,) = service.handle("describe", params)["regions"]
        assert entry["id"] == "a" and entry["row"]["region_id"] == "a"
    assert len(pyogrio.read_dataframe(out, layer="regions", read_geometry=False)) == 1


def test_describe_raster_b64_chip(service, make_raster):
    raster = make_raster(crs=UTM)
    with open(raster, "rb") as handle:
        data = base64.b64encode(handle.read()).decode()
    result = service.handle("describe", {"raster_b64": data, "raster_name": "WMS chip",
                                         "regions": [{"id": "1", "wkt": INSIDE}], "thumbnail": False})
    (entry,) = result["regions"]
    assert entry["error"] is None and entry["description"]
    assert entry["scene"] == "WMS chip" and entry["thumbnail_png_b64"] is None


def test_missing_raster_is_not_found_naming_the_file(service, tmp_path):
    missing = str(tmp_path / "gone.tif")
    with pytest.raises(ServiceError) as caught:
        service.handle("describe", {"raster": missing, "regions": [{"wkt": INSIDE}]})
    assert caught.value.code == "not_found" and missing in caught.value.message


def test_raster_without_crs_and_lonlat_region_is_no_crs(service, make_raster):
    from mgimm_core.errors import NoCRSError

    raster = make_raster(crs=None)
    with pytest.raises(NoCRSError) as caught:
        service.handle("describe", {"raster": raster, "regions": [{"wkt": INSIDE}]})
    payload = error_payload(caught.value)           # what the worker and the server send
    assert payload["code"] == "no_crs" and ERROR_CODES["no_crs"] == 422
    assert raster in payload["message"] and "gdal_edit.py -a_srs" in payload["message"]


def test_a_drawn_region_in_metres_sent_as_lonlat_names_the_crs_parameter(service, make_raster):
    """Found in review: a region whose WKT is in metres with crs EPSG:4326 is answered as that (the
    request's 'crs'), not as invalid WKT or a CLI flag; the other regions go on."""
    metres = "POLYGON ((500100 4499700, 500300 4499700, 500300 4499900, 500100 4499900, 500100 4499700))"
    result = service.handle("describe", {"raster": make_raster(crs=UTM), "crs": "EPSG:4326", "thumbnail": False,
                                         "regions": [{"id": "m", "wkt": metres}, {"id": "a", "wkt": INSIDE}]})
    by_id = {entry["id"]: entry for entry in result["regions"]}
    assert by_id["m"]["error_code"] == "aoi_error" and by_id["a"]["error"] is None
    message = by_id["m"]["error"]
    assert "request's crs EPSG:4326" in message and "'crs'" in message
    assert "not valid WKT" not in message and "--aoi-crs" not in message


def test_every_region_outside_is_region_outside(service, make_raster):
    with pytest.raises(ServiceError) as caught:
        service.handle("describe", {"raster": make_raster(crs=UTM), "regions": [{"wkt": OUTSIDE}]})
    assert caught.value.code == "region_outside" and "outside" in caught.value.message


@pytest.mark.parametrize("request_type, params, needle", [
    ("nope", {}, "unknown request type"),
    ("describe", {"raster": "x.tif"}, "'regions' is required"),
    ("describe", {"raster": "x.tif", "regions": []}, "'regions' is empty"),
    ("describe", {"regions": [{"wkt": INSIDE}]}, "exactly one of 'raster'"),
    ("describe", {"raster": "x.tif", "bands": "3,2,1", "regions": [{"wkt": INSIDE}]}, "'bands' must be list"),
    ("describe", {"raster": "x.tif", "max_new_tokens": 0, "regions": [{"wkt": INSIDE}]}, "out of range"),
    ("describe", {"raster_b64": "%%%", "regions": [{"wkt": INSIDE}]}, "not valid base64"),
    ("describe", {"raster": "x.tif", "crs": "EPSG:999999", "regions": [{"wkt": INSIDE}]}, "'crs'"),
])
def test_malformed_requests_are_bad_request(service, request_type, params, needle):
    with pytest.raises(ServiceError) as caught:
        service.handle(request_type, params)
    assert caught.value.code == "bad_request" and needle in caught.value.message


def test_raster_b64_must_be_a_tiff(service):
    vrt = base64.b64encode(b"<VRTDataset rasterXSize='1'></VRTDataset>").decode()
    with pytest.raises(ServiceError) as caught:
        service.handle("describe", {"raster_b64": vrt, "regions": [{"wkt": INSIDE}]})
    assert caught.value.code == "bad_input"


def test_roots_restrict_paths(tmp_path_factory, make_raster, tmp_path):
    inside_root = make_raster(crs=UTM)
    other = tmp_path_factory.mktemp("elsewhere")
    restricted = Service(None, roots=[str(tmp_path)])
    assert restricted.check_path(inside_root, "raster") == inside_root
    for path in (str(other / "x.tif"), f"{tmp_path}/../{other.name}/x.tif", "/vsicurl/http://example.com/a.tif"):
        with pytest.raises(ServiceError) as caught:
            restricted.check_path(path, "raster")
        assert caught.value.code == "forbidden"
    with pytest.raises(ServiceError) as caught:
        Service(None, roots=[]).check_path(inside_root, "raster")
    assert "raster_b64" in caught.value.message
    assert Service(None).check_path("/anything.tif", "raster") == "/anything.tif"   # the local worker


def test_cancel_between_batches(service, make_raster):
    regions = [{"id": str(i), "wkt": INSIDE} for i in range(6)]
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 2          # let the first regions run, then cancel

    with pytest.raises(ServiceError) as caught:
        service.handle("describe", {"raster": make_raster(crs=UTM), "regions": regions, "batch_size": 1},
                       cancelled=cancelled)
    assert caught.value.code == "cancelled" and "of 6 region" in caught.value.message


def test_describe_file_writes_the_cli_summary(service, make_raster, tmp_path):
    raster = make_raster(crs=UTM)
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "r1"},
         "geometry": shapely.geometry.mapping(shapely.from_wkt(INSIDE))}]}))
    progress = []
    summary = service.handle("describe_file", {"scenes": [raster], "aoi": str(aoi),
                                               "output": str(tmp_path / "file.gpkg")},
                             progress=lambda v, m: progress.append(v))
    assert summary["described"] == 1 and summary["failed"] == 0 and summary["unit"] == "regions"
    assert summary["cancelled"] is False and progress[-1] == 1.0
    _, _, _, fields = pyogrio.raw.read(tmp_path / "file.gpkg", layer="regions", read_geometry=False,
                                       columns=["region_id", "description"])
    assert list(fields[0]) == ["r1"] and fields[1][0]


def test_error_payload_codes():
    from mgimm_core.errors import (AOIError, BandError, CRSError, GeotransformError, MGIMMError, ModelError,
                                   NoCRSError, OptionsError, OutputError, RegionError, RegionGeometryError,
                                   RegionOutsideError, RegionTooSmallError, SceneError)

    assert error_payload(ModelError("no model"))["code"] == "model"
    assert error_payload(SceneError("bad file"))["code"] == "scene_unreadable"
    assert error_payload(MGIMMError("bad"))["code"] == "bad_input"
    for cls in (SceneError, BandError, CRSError, NoCRSError, AOIError, OptionsError, RegionError,
                RegionOutsideError, RegionGeometryError, RegionTooSmallError, OutputError, GeotransformError):
        assert error_payload(cls("x"))["code"] == cls.code and cls.code in ERROR_CODES
    internal = error_payload(KeyError("boom"))
    assert internal["code"] == "internal" and "report" in internal["message"]
    assert all(400 <= status < 600 for status in ERROR_CODES.values())


def test_thumbnail_is_downsized_png_with_region_highlighted():
    image = np.full((300, 600, 3), 200, np.uint8)
    mask = np.zeros((300, 600), bool)
    mask[:, :300] = True
    pixels = decode_png(thumbnail_png_b64(image, mask))
    assert pixels.shape == (3, 128, 256)
    assert pixels[0, 10, 10] == 200 and pixels[0, 10, 250] < 100      # outside the mask is dimmed
    small = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    with MemoryFile(encode_png(small)) as mem, mem.open() as ds:
        assert np.array_equal(np.moveaxis(ds.read(), 0, -1), small)


def test_every_error_code_is_documented_in_the_protocol():
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    missing = [code for code in ERROR_CODES if f"| {code} |" not in text]
    assert not missing, f"docs/protocol.md lacks rows for {missing}"


@pytest.mark.parametrize("request_type", ["describe", "describe_file"])
def test_a_cancelled_request_is_recorded_as_cancelled_in_runs(service, make_raster, tmp_path, request_type):
    raster, out = make_raster(crs=UTM), tmp_path / "cancelled.gpkg"
    regions = [{"id": str(i), "wkt": INSIDE} for i in range(6)]
    params: dict = {"raster": raster, "regions": regions, "output": str(out), "mode": "create"}
    if request_type == "describe_file":
        aoi = tmp_path / "aoi.geojson"
        aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"id": str(i)},
             "geometry": shapely.geometry.mapping(shapely.from_wkt(INSIDE))} for i in range(6)]}))
        params = {"scenes": [raster], "aoi": str(aoi), "output": str(out)}
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 6          # let the first batches be written, then cancel

    with pytest.raises(ServiceError) as caught:
        service.handle(request_type, {**params, "batch_size": 1}, cancelled=cancelled)
    assert caught.value.code == "cancelled"
    _, _, _, (status,) = pyogrio.raw.read(out, layer="runs", read_geometry=False, columns=["status"])
    assert list(status) == ["cancelled"]
    _, _, _, (ids,) = pyogrio.raw.read(out, layer="regions", read_geometry=False, columns=["region_id"])
    assert 0 < len(ids) < 6                                    # what was described before the cancel is kept


def test_per_region_chips_in_one_request_answer_as_one_request_each(service, make_raster):
    """Regions carrying their own raster_b64 (the QGIS plugin's server chips, several per request)
    are described in one request, each on its own chip, as when each chip is its own request."""
    rng = np.random.default_rng(5)
    chips = []
    for index in range(3):
        path = make_raster(f"chip{index}.tif", crs=UTM, data=rng.integers(0, 255, (3, 48, 64), dtype=np.uint8))
        with open(path, "rb") as handle:
            chips.append(base64.b64encode(handle.read()).decode())
    regions = [{"id": str(i), "wkt": INSIDE, "raster_b64": chip, "chip_scale": 2.0} for i, chip in enumerate(chips)]
    together = service.handle("describe", {"raster_name": "big.tif", "regions": regions, "thumbnail": False})
    alone = [service.handle("describe", {"raster_b64": chip, "raster_name": "big.tif", "chip_scale": 2.0,
                                         "regions": [{"id": str(i), "wkt": INSIDE}], "thumbnail": False})["regions"][0]
             for i, chip in enumerate(chips)]
    assert [e["id"] for e in together["regions"]] == ["0", "1", "2"]
    assert [(e["description"], e["attributes"], e["scene"]) for e in together["regions"]] == \
        [(e["description"], e["attributes"], e["scene"]) for e in alone]
    assert together["regions"][0]["scene"] == "big.tif"
    with pytest.raises(ServiceError) as caught:      # chips for some regions only, or with a raster too
        service.handle("describe", {"raster_b64": chips[0], "regions": regions})
    assert caught.value.code == "bad_request" and "every region" in caught.value.message
    with pytest.raises(ServiceError) as caught:
        service.handle("describe", {"regions": regions[:1] + [{"id": "9", "wkt": INSIDE}]})
    assert caught.value.code == "bad_request"


def test_models_lists_model_folders_with_family_size_and_licence(service, tmp_path):
    """Offline model management: the model folders in a folder, with model-info's facts, no weights loaded."""
    import shutil

    from mgimm_core.model_dir import DEMO_MODEL_DIR

    shutil.copytree(DEMO_MODEL_DIR, tmp_path / "demo-copy")
    (tmp_path / "notes").mkdir()                                     # not a model: left out
    result = service.handle("models", {"folder": str(tmp_path)})
    (row,) = result["models"]
    assert row["path"].endswith("demo-copy") and row["model"] == "demo-copy" and row["family"]
    assert row["size_bytes"] > 1000 and "licence" in row
    with pytest.raises(ServiceError) as caught:
        service.handle("models", {"folder": str(tmp_path / "missing")})
    assert caught.value.code == "not_found"


def test_diagnostics_reports_versions_device_and_model(service):
    report = service.handle("diagnostics", {})
    assert report["mgimm_geo"] and report["torch"] and report["python"]
    assert report["cuda_available"] in (True, False) and report["device_asked"]
    assert report["model"]["kind"] and "memory_total_bytes" in report
