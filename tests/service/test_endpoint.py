"""OpenAI-compatible endpoints in both directions, against a real `mgimm-geo serve` on 127.0.0.1:
`describe --model URL` gives the local run's rows, the `openai` client talks to the server, and
endpoint failures become rows (or exits) with stable codes."""

from __future__ import annotations

import http.server
import json
import math
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
from click.testing import CliRunner

from batch.cli import cli
from mgimm_core.endpoint import EndpointClient
from mgimm_core.endpoint.chat import answer_object, png_data_uri, value_probability
from mgimm_core.endpoint.http import check_base_url
from mgimm_core.errors import InvalidAnswerError, OptionsError
from tests.service.test_cli_serve import TOKEN, call, free_port, serving
from tests.service.test_service import INSIDE, UTM, lonlat_polygon, save_tiny_model

MODEL = "tiny_mgimm_model"        # save_tiny_model's folder name: the served id


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The base URL (…/v1) of a real `mgimm-geo serve` of the tiny MGIMM, with TOKEN."""
    model_dir = save_tiny_model(tmp_path_factory)
    assert model_dir.endswith(MODEL)
    with serving("--device", "cpu", "--max-new-tokens", "6", "--model", model_dir) as base:
        yield base + "/v1", str(model_dir)


@pytest.fixture
def scene_and_aoi(make_raster, tmp_path):
    """A UTM scene and three AOI polygons (one partly outside, one outside) as GeoJSON."""
    scene = make_raster(crs=UTM)
    x0, y0 = 500000.0, 4_500_000.0
    polygons = {"a": INSIDE, "b": lonlat_polygon(x0 + 20, y0 - 460, x0 + 330, y0 - 200),
                "c": lonlat_polygon(x0 + 500, y0 - 300, x0 + 700, y0 - 100),
                "out": lonlat_polygon(x0 + 5000, y0 - 300, x0 + 5200, y0 - 100)}
    import shapely

    features = [{"type": "Feature", "properties": {"id": k}, "geometry": shapely.geometry.mapping(shapely.from_wkt(w))}
                for k, w in polygons.items()]
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return scene, str(aoi)


def rows(path: str) -> dict:
    from pyogrio.raw import read

    meta, _fids, _geoms, values = read(path, layer="regions")
    return {r["region_id"]: r for r in (dict(zip(list(meta["fields"]), row)) for row in zip(*values))}


def runs(path: str) -> list[dict]:
    import sqlite3

    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM runs")]


COMPARED = ("description", "object", "color", "shape", "size", "orientation", "position", "extra_attributes",
            "valid_fraction", "gsd_m", "prompt", "error_code", "scene")
#: The model's probabilities: the same forward pass, summed in another batch (last digits may differ).
PROBABILITIES = ("object_p", "no_object_p")


def _plain(row: dict) -> dict:
    """The compared fields, NaN as None (NaN != NaN)."""
    plain = {c: None if isinstance(row.get(c), float) and np.isnan(row[c]) else row.get(c)
             for c in COMPARED + PROBABILITIES}
    return {c: pytest.approx(v, rel=1e-5) if c in PROBABILITIES and v is not None else v for c, v in plain.items()}


def test_models_lists_the_served_model_with_its_chip_settings(served):
    base, _ = served
    status, body = call(base.removesuffix("/v1"), "/v1/models")
    assert status == 200
    (entry,) = body["data"]
    assert entry["id"] == MODEL and entry["object"] == "model"
    assert entry["mgimm"]["family"] == "mgimm" and entry["mgimm"]["chip_size"] > 0
    assert "trained_on" in entry["mgimm"]


@pytest.mark.slow
def test_describe_through_serve_gives_the_local_rows_and_resumes(served, scene_and_aoi, tmp_path, monkeypatch):
    base, model_dir = served
    scene, aoi = scene_and_aoi
    runner = CliRunner()
    common = [scene, "--aoi", aoi, "--max-new-tokens", "6", "-q"]
    local = runner.invoke(cli, ["describe", *common, "-o", str(tmp_path / "local.gpkg"), "--model", model_dir,
                                "--device", "cpu"])
    assert local.exit_code == 3, local.output          # `out` lies outside: a region_outside row
    monkeypatch.setenv("MGIMM_API_KEY", TOKEN)
    remote = runner.invoke(cli, ["describe", *common, "-o", str(tmp_path / "remote.gpkg"), "--model", base])
    assert remote.exit_code == 3, remote.output
    want, got = rows(str(tmp_path / "local.gpkg")), rows(str(tmp_path / "remote.gpkg"))
    assert set(want) == set(got) == {"a", "b", "c", "out"}
    for region in want:
        assert _plain(got[region]) == _plain(want[region]), region
    assert got["a"]["description"] and got["a"]["model"] == MODEL
    assert 0 < got["a"]["no_object_p"] < 1           # the server model's own probability, sent beside the row
    assert got["out"]["error_code"] == "region_outside"
    (run,) = runs(str(tmp_path / "remote.gpkg"))
    assert run["model_id"] == MODEL and base in run["parameters"]
    assert TOKEN not in json.dumps(run) and TOKEN not in remote.output
    again = runner.invoke(cli, ["describe", *common, "-o", str(tmp_path / "remote.gpkg"), "--model", base, "--resume"])
    summary = json.loads(again.output[again.output.index("{"):again.output.rindex("}") + 1])
    assert summary["described"] == 0 and summary["already_done"] == 3     # failed rows are retried, not done


@pytest.mark.slow
def test_the_demo_model_through_serve_answers_as_it_does_locally(tmp_path, monkeypatch):
    """The shipped demo model is asked with each chip's GSD in its questions (processor.gsd_prompt):
    through `mgimm-geo serve` the GSD travels with the region, so every row is the local run's."""
    from training.synthetic.demo_inputs import write_demo_inputs

    write_demo_inputs(str(tmp_path / "scene"), seed=77)
    common = [str(tmp_path / "scene" / "scene.tif"), "--aoi", str(tmp_path / "scene" / "aoi.geojson"), "-q"]
    runner = CliRunner()
    local = runner.invoke(cli, ["describe", *common, "-o", str(tmp_path / "local.gpkg"), "--device", "cpu"])
    assert local.exit_code == 0, local.output
    monkeypatch.setenv("MGIMM_API_KEY", TOKEN)
    with serving("--device", "cpu") as base:                # the embedded demo model
        remote = runner.invoke(cli, ["describe", *common, "-o", str(tmp_path / "remote.gpkg"), "--model", base + "/v1"])
    assert remote.exit_code == 0, remote.output
    want, got = rows(str(tmp_path / "local.gpkg")), rows(str(tmp_path / "remote.gpkg"))
    assert set(want) == set(got) and len(want) > 5
    for region in want:
        assert _plain(got[region]) == _plain(want[region]), region
        assert 0 < got[region]["object_p"] <= 1, region


def test_python_api_and_worker_service_take_an_endpoint(served, scene_and_aoi, monkeypatch):
    import mgimm_core
    from mgimm_core.service import Service

    base, _ = served
    scene, aoi = scene_and_aoi
    monkeypatch.setenv("OPENAI_API_KEY", TOKEN)
    engine = mgimm_core.load_model(base, max_new_tokens=6, concurrency=2)
    try:
        frame = mgimm_core.describe(scene, aoi, model=engine)
        assert frame.attrs["summary"]["served_model"] == MODEL
        assert frame.set_index("region_id").loc["a", "description"]
        assert engine.client.connections_opened <= 2      # kept alive: not one connection per request
    finally:
        engine.close()
    service = Service(base)                 # the worker and the server with --model URL
    result = service.handle("describe", {"raster": scene, "crs": "EPSG:4326", "max_new_tokens": 6,
                                         "regions": [{"id": "a", "wkt": INSIDE}]})
    assert result["model"] == MODEL and result["regions"][0]["description"]


def test_openai_client_talks_to_serve(served):
    import openai   # the dev extra installs it (pyproject.toml)
    base, _ = served
    client = openai.OpenAI(base_url=base, api_key=TOKEN, max_retries=0)
    assert [m.id for m in client.models.list().data] == [MODEL]
    chip = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    image = {"type": "image_url", "image_url": {"url": png_data_uri(chip)}}
    text = client.chat.completions.create(model=MODEL, temperature=0, messages=[{"role": "user", "content": [image]}],
                                          extra_body={"mgimm": {"regions": [{"box": [8, 8, 40, 40]}]}})
    assert isinstance(text.choices[0].message.content, str) and text.choices[0].message.content
    schema = {"type": "object", "properties": {"object": {"type": "string"}, "description": {"type": "string"}}}
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": [image]}], max_tokens=4,
        response_format={"type": "json_schema", "json_schema": {"name": "row", "schema": schema}},
        extra_body={"mgimm": {"regions": [{"polygon": [[8, 8], [40, 10], [30, 44]]}]}})
    assert set(json.loads(answer.choices[0].message.content)) == {"object", "description"}
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": [image]}])
    with pytest.raises(openai.PermissionDeniedError):      # nothing is fetched: images are data URIs
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://127.0.0.1:1/chip.png"}}]}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()


def test_chat_completions_checks_requests_and_answers_errors_in_openai_shape(served):
    base, _ = served
    root = base.removesuffix("/v1")
    chip = (np.random.default_rng(2).random((32, 48, 3)) * 255).astype(np.uint8)
    image = {"type": "image_url", "image_url": {"url": png_data_uri(chip)}}

    def chat(**body):
        return call(root, "/v1/chat/completions", {"messages": [{"role": "user", "content": [image]}],
                                                   "max_tokens": 3, **body})

    mask = np.zeros((32, 48), dtype=np.uint8)
    mask[4:20, 6:30] = 1
    status, answer = chat(mgimm={"regions": [{"box": [6, 4, 30, 20], "mask": png_data_uri(mask * 255)}]})
    assert status == 200 and answer["choices"][0]["message"]["role"] == "assistant"
    for body, code in [({"messages": [{"role": "user", "content": "no image"}]}, "bad_request"),
                       ({"stream": True}, "bad_request"),
                       ({"mgimm": {"regions": [{"box": [1, 1, 5, 5]}, {"box": [2, 2, 6, 6]}]}}, "bad_request"),
                       ({"mgimm": {"regions": [{"box": [6, 4, 30, 20], "mask": png_data_uri(mask[:8])}]}},
                        "bad_request"),
                       ({"mgimm": {"regions": [{"box": [100, 100, 120, 120]}]}}, "bad_request"),
                       ({"response_format": {"type": "json_schema", "json_schema": {"schema": {
                           "properties": {"weather": {"type": "string"}}}}}}, "bad_request")]:
        status, error = chat(**body)
        assert status == 400 and error["error"]["code"] == code, (body, error)
    status, error = call(root, "/v1/chat/completions", raw=b"{not json")
    assert status == 400 and error["error"]["code"] == "bad_request"
    assert call(root, "/v1/models", token=None)[0] == 401


@pytest.mark.slow
def test_wrong_key_unreachable_and_unknown_family_exit_with_the_option_to_fix(served, scene_and_aoi, tmp_path,
                                                                             monkeypatch):
    base, _ = served
    scene, aoi = scene_and_aoi
    runner = CliRunner()
    out = ["-o", str(tmp_path / "x.gpkg"), "-q"]
    monkeypatch.setenv("MGIMM_API_KEY", "a-wrong-key-123")
    refused = runner.invoke(cli, ["describe", scene, "--aoi", aoi, *out, "--model", base])
    assert refused.exit_code == 1 and "MGIMM_API_KEY" in refused.output and "a-wrong-key-123" not in refused.output
    monkeypatch.delenv("MGIMM_API_KEY")
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    unreachable = runner.invoke(cli, ["describe", scene, "--aoi", aoi, *out, "--model", nowhere])
    assert unreachable.exit_code == 1 and "cannot connect" in unreachable.output
    bad_url = runner.invoke(cli, ["describe", scene, "--aoi", aoi, *out, "--model", "http://127.0.0.1:1/api"])
    assert bad_url.exit_code == 2 and "/v1" in bad_url.output
    with fake_endpoint(models=["some-new-vlm", "another"]) as fake:
        several = runner.invoke(cli, ["describe", scene, "--aoi", aoi, *out, "--model", fake])
        assert several.exit_code == 2 and "--served-model" in several.output
        unknown = runner.invoke(cli, ["describe", scene, "--aoi", aoi, *out, "--model", fake,
                                      "--served-model", "some-new-vlm"])
        assert unknown.exit_code == 2 and "--family" in unknown.output
        tokens = runner.invoke(cli, ["describe", scene, "--aoi", aoi, *out, "--model", fake,
                                     "--served-model", "some-new-vlm", "--family", "mgimm"])
        assert tokens.exit_code == 2 and "mgimm-geo serve" in tokens.output


def test_failed_requests_are_rows_with_stable_codes_after_retries(scene_and_aoi, tmp_path):
    scene, aoi = scene_and_aoi
    with fake_endpoint(models=["some-vlm"], chat_statuses=[429, 400]) as fake:
        result = CliRunner().invoke(cli, ["describe", scene, "--aoi", aoi, "-o", str(tmp_path / "r.gpkg"), "-q",
                                          "--model", fake, "--family", "generic", "--concurrency", "1"])
        assert result.exit_code == 3, result.output
        got = rows(str(tmp_path / "r.gpkg"))
        assert {r["error_code"] for k, r in got.items() if k != "out"} == {"endpoint_refused"}
        assert all(r["description"] is None for r in got.values())
        assert fake.requests.count("chat") == 4          # 3 regions + the retried 429
    with fake_endpoint(models=["some-vlm"], chat_delay=2.0) as fake:
        result = CliRunner().invoke(cli, ["describe", scene, "--aoi", aoi, "-o", str(tmp_path / "t.gpkg"), "-q",
                                          "--model", fake, "--family", "generic", "--timeout", "0.3"])
        assert result.exit_code == 3
        assert {r["error_code"] for k, r in rows(str(tmp_path / "t.gpkg")).items() if k != "out"} == {
            "endpoint_timeout"}


def test_answers_are_checked_against_the_schema_and_urls_checked():
    assert answer_object('{"object": "building", "color": "red"}', ("object", "color")) == {
        "object": "building", "color": "red"}
    with pytest.raises(InvalidAnswerError):
        answer_object('{"object": "building"}', ("object", "color"))
    with pytest.raises(InvalidAnswerError):
        answer_object("a red building", ("object",))
    assert check_base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    for bad in ("http://user:secret@127.0.0.1/v1", "ftp://127.0.0.1/v1", "http://127.0.0.1:8000/api"):
        with pytest.raises(OptionsError):
            check_base_url(bad)
    assert "secret" not in repr(EndpointClient("http://127.0.0.1:1/v1", api_key="secret"))


def test_value_probability_reads_the_token_log_probabilities_of_a_json_value():
    """The `logprobs` part of an OpenAI chat response, written here in vLLM's shape (token, logprob,
    bytes; the end-of-text token listed after the answer): the product over the tokens overlapping
    the value, with a character split over two tokens. A real vLLM's: test_third_party_endpoint.py."""
    text = '{"object": "café boat", "color": "red"}'
    pieces = [b'{"', b"object", b'": "', b"caf", "é".encode()[:1], "é".encode()[1:] + b" boat", b'", "',
              b"color", b'": "', b"red", b'"}', b"</s>"]
    assert b"".join(pieces) == text.encode() + b"</s>"
    logprobs = [-0.01 * (i + 1) for i in range(len(pieces))]
    content = [{"token": piece.decode(errors="replace"), "logprob": lp, "bytes": list(piece)}
               for piece, lp in zip(pieces, logprobs)]
    response = {"choices": [{"logprobs": {"content": content}}]}
    assert value_probability(response, text, "object") == pytest.approx(math.exp(sum(logprobs[3:6])))
    assert value_probability(response, text, "color") == pytest.approx(math.exp(logprobs[9]))
    assert value_probability(response, text, "size") is None                       # not in the answer
    assert value_probability({"choices": [{"logprobs": None}]}, text, "object") is None
    assert value_probability(response, text.replace("red", "blue"), "object") is None   # tokens spell another text


# ------------------------------------------------------------------ a fake endpoint (errors, canned answers)
class _FakeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.server.requests.append("models")
        self._answer(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "fake"}
                                                      for m in self.server.models]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.server.requests.append("chat")
        time.sleep(self.server.chat_delay)
        if self.server.canned is not None:            # the attribute question carries the schema
            content, logprobs = self.server.canned[0 if "response_format" in body else 1]
            self._answer(200, {"object": "chat.completion", "choices": [{
                "index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content},
                "logprobs": {"content": logprobs} if body.get("logprobs") and logprobs else None}]})
            return
        statuses = self.server.chat_statuses
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        self._answer(status, {"error": {"message": "fake endpoint: refused on purpose", "code": status}})


@contextmanager
def fake_endpoint(models: list[str], chat_statuses: list[int] | None = None, chat_delay: float = 0.0,
                  canned: tuple[tuple[str, list | None], tuple[str, list | None]] | None = None):
    """A FAKE OpenAI-compatible endpoint on 127.0.0.1 (not a model: it never reads a question): it
    lists `models` and answers every chat request with the next of `chat_statuses` (the last one
    repeating) after `chat_delay` seconds, so the client's error paths can be driven exactly; or,
    with `canned`, with fixed (content, logprobs content) answers: the first to the attribute
    question, the second to the description question."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHandler)
    server.daemon_threads = True
    server.models, server.chat_statuses, server.chat_delay = models, list(chat_statuses or [400]), chat_delay
    server.canned = canned
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield _Fake(url, server.requests)
    finally:
        server.shutdown()
        server.server_close()


class _Fake(str):
    """The fake's URL (a str), with the kinds of the requests it got."""

    def __new__(cls, url: str, requests: list):
        self = super().__new__(cls, url)
        self.requests = requests
        return self


def test_an_endpoints_token_log_probabilities_become_the_rows_object_p(scene_and_aoi, tmp_path):
    """Through the describe loop (a FAKE endpoint's canned answers: a random model served by a real
    vLLM never closes a free-text JSON value, test_third_party_endpoint.py reads its log probabilities)."""
    scene, aoi = scene_and_aoi
    answer = '{"object": "vehicle", "color": "red", "shape": "", "size": "", "orientation": ""}'
    cut = answer.index("vehicle")
    pieces = [answer[:cut], "vehi", "cle", answer[cut + 7:]]
    logprobs = [{"token": t, "logprob": lp} for t, lp in zip(pieces, (-0.5, -0.2, -0.1, -0.3))]
    for canned_logprobs, want in ((logprobs, math.exp(-0.3)), (None, None)):
        out = tmp_path / f"r{want is None}.gpkg"
        with fake_endpoint(models=["some-vlm"], canned=((answer, canned_logprobs), ("A red vehicle.", None))) as fake:
            result = CliRunner().invoke(cli, ["describe", scene, "--aoi", aoi, "-o", str(out), "-q", "--model", fake,
                                              "--family", "generic"])
        assert result.exit_code == 3, result.output                   # `out` lies outside the scene
        got = {k: r for k, r in rows(str(out)).items() if k != "out"}
        assert {r["object"] for r in got.values()} == {"vehicle"}
        if want is None:                                               # no log probabilities: no column
            assert all("object_p" not in r or r["object_p"] is None or np.isnan(r["object_p"]) for r in got.values())
        else:
            assert all(r["object_p"] == pytest.approx(want) for r in got.values())


def test_the_family_is_guessed_from_the_served_id_by_the_registry(monkeypatch):
    from mgimm_core import families

    generic = families.family("generic")
    assert families.for_served_id("org/some-vlm-7b") is None          # no family claims it: --family asked
    monkeypatch.setattr(generic, "served_id_patterns", ("*some-vlm*",))
    assert families.for_served_id("Org/Some-VLM-7B") is generic
    assert not any(f.recognise({"model_type": "llava"}, None) for f in [generic])   # never a folder's family


def test_a_guided_run_through_an_endpoint_is_refused_before_its_output_exists(scene_and_aoi, tmp_path):
    """(A fake endpoint, not a model: the refusal comes before any request.)"""
    scene, aoi = scene_and_aoi
    out = tmp_path / "guided.gpkg"
    with fake_endpoint(models=["some-vlm"]) as fake:
        result = CliRunner().invoke(cli, ["describe", scene, "--aoi", aoi, "--guide", aoi, "-o", str(out), "-q",
                                          "--model", fake, "--family", "generic"])
    assert result.exit_code == 2 and "guide" in result.output
    assert not out.exists()


def test_a_key_is_never_sent_in_clear_to_another_machine(monkeypatch):
    from mgimm_core.endpoint.http import EndpointClient
    from mgimm_core.errors import OptionsError

    with pytest.raises(OptionsError) as caught:
        EndpointClient("http://gpu-box.example:8000/v1", api_key="k-123")
    assert caught.value.option == "model" and "https" in str(caught.value) and "k-123" not in str(caught.value)
    EndpointClient("http://127.0.0.1:8000/v1", api_key="k-123")          # this machine: allowed
    EndpointClient("https://gpu-box.example/v1", api_key="k-123")         # encrypted: allowed
