"""Fuzzing (Hypothesis) of the inputs a user or a client controls: AOI sources (text, and files of
every suffix with random or almost-right contents), the request service's parameters (what the worker
and the server hand over) and the worker's JSON-lines loop. Nothing may escape but the documented
errors: `MGIMMError`s whose `code` is in the protocol's table; the worker answers every line in JSON.

Brief in CI (MGIMM_FUZZ_EXAMPLES, default 60 per test); longer: MGIMM_FUZZ_EXAMPLES=5000 pytest tests/core/test_fuzz.py.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mgimm_core.errors import MGIMMError
from mgimm_core.regions import ChipSettings, place_region, read_aoi
from mgimm_core.scene import Scene
from mgimm_core.service import ERROR_CODES, Service

EXAMPLES = int(os.environ.get("MGIMM_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30)
numbers = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e300]),
                    st.integers(-400, 400))


def coordinates(n):
    return st.lists(st.tuples(numbers, numbers), min_size=0, max_size=n)


def documented(exc: BaseException) -> None:
    """Fail unless `exc` is one of mgimm_core's errors, with a code clients know."""
    assert isinstance(exc, MGIMMError), f"undocumented {type(exc).__name__}: {exc}"
    assert exc.code in ERROR_CODES and str(exc), exc


# ================================================================== AOI readers
@st.composite
def geojson_texts(draw) -> str:
    """GeoJSON that is almost right: random geometry types, rings, coordinates, properties, crs members."""
    kind = draw(st.sampled_from(["Polygon", "MultiPolygon", "Point", "LineString", "GeometryCollection", "Nonsense"]))
    ring = [list(c) for c in draw(coordinates(8))]
    coords = {"Polygon": [ring], "MultiPolygon": [[ring]], "Point": ring[0] if ring else [],
              "LineString": ring}.get(kind, ring)
    feature = {"type": "Feature", "properties": draw(st.dictionaries(st.text(max_size=10), json_values, max_size=4)),
               "geometry": {"type": kind, "coordinates": coords}}
    if kind == "GeometryCollection":
        feature["geometry"] = {"type": kind, "geometries": [{"type": "Polygon", "coordinates": [ring]}]}
    doc = {"type": "FeatureCollection", "features": [feature] * draw(st.integers(0, 3))}
    if draw(st.booleans()):
        doc["crs"] = {"type": "name", "properties": {"name": draw(st.sampled_from(
            ["EPSG:32633", "urn:ogc:def:crs:EPSG::4326", "EPSG:999999", "nonsense", ""]))}}
    text = json.dumps(doc, allow_nan=True)
    cut = draw(st.integers(0, len(text)))
    return text if draw(st.booleans()) else text[:cut]            # truncated files too


@pytest.fixture(scope="module")
def fuzz_scene(tmp_path_factory):
    import numpy as np
    import rasterio
    from affine import Affine

    path = tmp_path_factory.mktemp("fuzz") / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(10, 0, 500000, 0, -10, 4_500_000)) as dst:
        dst.write(np.zeros((3, 32, 32), np.uint8))
    with Scene.open(path) as scene:
        yield scene


def read_and_place(source, scene, **kwargs) -> None:
    try:
        features = read_aoi(source, **kwargs)
    except Exception as exc:          # noqa: BLE001 - checked to be a documented error
        documented(exc)
        return
    for feature in features:
        try:
            place_region(scene, feature, ChipSettings(input_size=32, min_window=8))
        except Exception as exc:      # noqa: BLE001
            documented(exc)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.builds(lambda t, c: f"{t} (({c}))", st.sampled_from(
    ["POLYGON", "MULTIPOLYGON", "POINT", "LINESTRING", "SRID=32633;POLYGON", "GEOMETRYCOLLECTION"]),
    st.text(alphabet="0123456789 .,-()naife", max_size=80)), st.builds(
    lambda xs: "bbox:" + ",".join(map(str, xs)), st.lists(numbers, max_size=5))),
    crs=st.sampled_from([None, "EPSG:32633", "EPSG:4326", "nonsense"]),
    buffer=st.sampled_from([None, 0.0, 5.0, -3.0, float("nan"), 1e12]))
def test_aoi_text_sources_raise_only_documented_errors(fuzz_scene, text, crs, buffer):
    read_and_place(text, fuzz_scene, crs=crs, buffer=buffer)


@FUZZ
@given(suffix=st.sampled_from([".geojson", ".json", ".gpkg", ".shp", ".fgb", ".csv", ".kml", ".gml", ""]),
       content=st.one_of(geojson_texts().map(str.encode), st.binary(max_size=300),
                         st.sampled_from([b"SQLite format 3\x00" + b"\x00" * 100, b"fgb\x03fgb\x00" + b"\x01" * 50,
                                          b"\x00\x00\x27\x0a" + b"\x00" * 96, b"<OGRVRTDataSource/>"])))
def test_aoi_files_raise_only_documented_errors(fuzz_scene, suffix, content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"aoi{suffix}"
        path.write_bytes(content)
        read_and_place(str(path), fuzz_scene)


# ================================================================== the request service
@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """A server-mode service (one root) and a local one, both with a model folder that does not exist:
    a request that passes every check ends in a `model` error instead of loading weights."""
    root = tmp_path_factory.mktemp("fuzz_root")
    missing = str(root / "no_model")
    return Service(missing, roots=[str(root)]), Service(missing), root


request_params = st.dictionaries(
    st.sampled_from(["raster", "raster_b64", "regions", "crs", "bands", "nodata", "output", "mode", "layer",
                     "scenes", "aoi", "tiles", "tile_size", "tile_overlap", "min_valid", "batch_size", "prompt",
                     "max_new_tokens", "attributes", "thumbnail", "engine", "buffer", "aoi_crs", "x"]),
    json_values | st.sampled_from(["/etc/passwd", "/vsicurl/http://127.0.0.1:9/a.tif", "a\x00b", "../../x.tif",
                                   [{"id": "a", "wkt": "POLYGON ((0 0, 1 0, 1 1, 0 0))"}], [1, 2, 3], "SU0qAA=="]),
    max_size=6)


@FUZZ
@given(kind=st.sampled_from(["describe", "describe_file", "hello", "nonsense", ""]),
       params=st.one_of(request_params, json_values))
def test_service_requests_raise_only_documented_errors(services, kind, params):
    for service in services[:2]:
        try:
            service.handle(kind, params)
        except Exception as exc:      # noqa: BLE001
            documented(exc)


# ================================================================== the worker's line loop
@FUZZ
@given(lines=st.lists(st.one_of(
    st.text(max_size=60).map(lambda t: t.replace("\n", " ")),
    json_values.map(json.dumps),
    st.fixed_dictionaries({"id": json_values, "type": st.sampled_from(["describe", "cancel", "hello", "x"])},
                          optional={"params": request_params}).map(json.dumps)), max_size=6))
def test_the_worker_answers_every_line_in_json_and_ends(services, lines):
    from batch.worker import ProtocolWriter, Worker

    stream = io.StringIO()
    worker = Worker(services[0], ProtocolWriter(stream), heartbeat_s=0, max_line_chars=4096)
    died: list = []
    previous_hook, threading.excepthook = threading.excepthook, died.append   # a request thread that raises
    try:
        done = threading.Thread(target=worker.serve, args=(io.StringIO("\n".join(lines) + "\n"),), daemon=True)
        done.start()
        done.join(timeout=60)
    finally:
        threading.excepthook = previous_hook
    assert not done.is_alive(), "the worker hung"
    assert not died, f"a worker thread died: {died[0].exc_value!r}"      # later requests would go unanswered
    messages = [json.loads(line) for line in stream.getvalue().splitlines()]     # every line is JSON
    assert messages[0]["type"] == "ready"
    assert all(m["type"] in ("ready", "progress", "ok", "error") for m in messages)
    assert all(m["code"] in ERROR_CODES for m in messages if m["type"] == "error")


def test_the_worker_refuses_an_id_it_could_not_repeat_and_goes_on(services):
    """An id holding NaN or Infinity (Python's parser reads them) is a bad_request with id null; the
    request thread lives on and answers the next request (it died writing the answer before: seen
    as a thread exception under test_the_worker_answers_every_line_in_json_and_ends)."""
    from batch.worker import ProtocolWriter, Worker

    import time

    stream = io.StringIO()
    worker = Worker(services[1], ProtocolWriter(stream), heartbeat_s=0)
    read_end, write_end = os.pipe()
    stdin, client = os.fdopen(read_end), os.fdopen(write_end, "w")
    done = threading.Thread(target=worker.serve, args=(stdin,), daemon=True)
    done.start()
    client.write('{"id": NaN, "type": "hello"}\n{"id": [1, Infinity], "type": "describe"}\n'
                 '{"id": "r2", "type": "hello"}\n')
    client.flush()
    deadline = time.monotonic() + 60       # stdin stays open until r2 is answered (EOF cancels what waits)
    while '"r2"' not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    client.close()
    done.join(timeout=60)
    messages = [json.loads(line) for line in stream.getvalue().splitlines()]
    refused = [m for m in messages if m["type"] == "error" and m["id"] is None]
    assert [m["code"] for m in refused] == ["bad_request"] * 2
    assert all("NaN or Infinity" in m["message"] for m in refused)
    # r2 is answered (its model folder does not exist: a `model` error, from the request thread)
    assert [(m["type"], m["code"]) for m in messages if m.get("id") == "r2" and m["type"] != "progress"] == [
        ("error", "model")]
