"""LLaVA-1.5-family checkpoints (llava-hf, original LLaVA, GeoChat) run as MGIMM's global-only mode.

Every checkpoint here is tiny and random, written by the test itself in the real on-disk format
(mgimm_core/model/testing_llava.py); the yardstick is transformers' own LlavaForConditionalGeneration
holding the same weights.
"""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import torch
from click.testing import CliRunner
from tests.families.family_checks import demo_inputs, describe, region_rows

from batch.cli import cli
from mgimm_core.errors import ModelError, VisionTowerNotFound
from mgimm_core.model import load_for_inference
from mgimm_core.model.llava_mgimm import interpolate_positions, load_llava
from mgimm_core.model.testing_llava import (interpolate_clip_positions, write_llava_hf, write_llava_original)
from mgimm_core.model.testing_mgimm import random_chip
from mgimm_core.model_dir import ModelDirectory
GEOCHAT, LLAVA_HF, LLAVA_ORIGINAL = "geochat", "llava-hf", "llava-original"   # family names (mgimm_core/families/llava.py)

FORMATS = {
    "llava-hf": lambda tmp: write_llava_hf(tmp / "llava_hf"),
    "llava-original-bin": lambda tmp: write_llava_original(tmp / "llava", tmp / "clip", pickled=True),
    "llava-original-safetensors": lambda tmp: write_llava_original(tmp / "llava_st", tmp / "clip_st", pickled=False,
                                                                   shards=1),
    "geochat": lambda tmp: write_llava_original(tmp / "geochat", tmp / "clip336", geochat=True, pickled=True),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("llava")
    return {name: make(tmp) for name, make in FORMATS.items()}


def logits_pair(directory, reference, prompt="what is the object in {region}", size=(40, 52)):
    model, processor = load_llava(directory)
    chip = random_chip(*size, seed=3)
    batch = processor([chip], boxes=[np.array([[5.0, 6.0, 30.0, 33.0]])], prompts=prompt, mode="global")
    with torch.no_grad():
        ours = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     pixel_values=batch["pixel_values"], mode="global").logits
        ids = batch["input_ids"].clone()
        ids[ids == processor.image_token_id] = reference.config.image_token_index
        theirs = reference(input_ids=ids, attention_mask=batch["attention_mask"],
                           pixel_values=batch["pixel_values"]).logits
    return ours, theirs, processor


@pytest.mark.parametrize("name", list(FORMATS))
def test_logits_equal_transformers_llava_on_the_same_weights(checkpoints, name):
    directory, reference = checkpoints[name]
    ours, theirs, processor = logits_pair(directory, reference)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() < 1e-4
    # the image really reaches the LM: another chip changes the logits
    other = processor([random_chip(40, 52, seed=9)], boxes=[np.array([[5.0, 6.0, 30.0, 33.0]])],
                      prompts="what is the object in {region}", mode="global")
    model, _ = load_llava(directory)
    with torch.no_grad():
        moved = model(**{k: other[k] for k in ("input_ids", "attention_mask", "pixel_values")}, mode="global").logits
    assert (moved - ours).abs().max().item() > 1e-3


def test_formats_are_recognised_and_give_their_input_size(checkpoints):
    kinds = {name: ModelDirectory.resolve(checkpoints[name][0]) for name in FORMATS}
    assert kinds["llava-hf"].format == LLAVA_HF and kinds["llava-hf"].chip.input_size == 32
    assert kinds["llava-original-bin"].format == LLAVA_ORIGINAL and kinds["llava-original-bin"].chip.input_size == 32
    assert kinds["geochat"].format == GEOCHAT and kinds["geochat"].chip.input_size == 504
    assert kinds["llava-original-bin"].vision_dir is not None


def test_geochat_extends_clip_positions_to_504_px(checkpoints):
    model, processor = load_llava(checkpoints["geochat"][0])
    assert processor.image_size == 504 and model.config.grid_size == 36
    table = model.vision_tower.embeddings.position_embedding.weight
    assert table.shape[0] == 36 * 36 + 1
    weight = torch.randn(24 * 24 + 1, 8)
    torch.testing.assert_close(interpolate_positions(weight, 36), interpolate_clip_positions(weight, 36))


def test_region_text_follows_each_checkpoints_convention(checkpoints):
    _, hf_processor = load_llava(checkpoints["llava-hf"][0])
    _, geochat_processor = load_llava(checkpoints["geochat"][0])
    box = np.array([[8.0, 16.0, 24.0, 32.0]])
    assert hf_processor.region_text(box) == "[0.25, 0.50, 0.75, 1.00]"           # 0..1 of the 32-px input
    assert geochat_processor.region_text(box * 504 / 32) == "{<25><50><75><100>|0}"   # 0..100 of 504 px
    # the box text is in the prompt, and no region tokens are added
    batch = hf_processor([random_chip(32, 32)], boxes=[box], prompts="in {region}", mode="global")
    assert (batch["input_ids"] == hf_processor.image_token_id).sum() == 16
    assert "[" in hf_processor.tokenizer.decode(batch["input_ids"][0])


def test_original_format_without_its_vision_tower_names_the_option(tmp_path, checkpoints):
    directory, _ = checkpoints["llava-original-bin"]
    config = json.loads((directory / "config.json").read_text())
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in directory.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    config["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"
    (moved / "config.json").write_text(json.dumps(config))
    with pytest.raises(VisionTowerNotFound, match="--vision DIR") as info:
        ModelDirectory.resolve(moved)
    assert info.value.code == "vision_not_found"
    # given --vision, it loads
    vision = json.loads((directory / "config.json").read_text())["mm_vision_tower"]
    assert ModelDirectory.resolve(moved, vision).vision_dir is not None
    model, _ = load_for_inference(str(moved), device="cpu", vision=vision)
    assert model.config.source_format == LLAVA_ORIGINAL


def test_a_bin_holding_more_than_tensors_is_refused_with_the_conversion(tmp_path, checkpoints):
    directory, _ = checkpoints["llava-original-bin"]
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in directory.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    shard = sorted(bad.glob("pytorch_model-*.bin"))[0]
    state = torch.load(shard, weights_only=True)
    state["__extra__"] = {"note": np.float64(1.0)}   # a numpy scalar: more than tensors
    torch.save(state, shard)
    with pytest.raises(ModelError, match="safetensors"):
        load_llava(bad)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llava-hf", "llava-original-bin", "geochat"])
def test_describe_writes_rows_from_each_format(tmp_path, checkpoints, name):
    directory, _ = checkpoints[name]
    out = tmp_path / "out.gpkg"
    result = describe(out, demo_inputs(tmp_path / "inputs"), directory, max_new_tokens=3)
    assert result.exit_code == 0, result.output
    rows = region_rows(out)
    assert len(rows) == 3 and all(r["error"] is None and r["description"] is not None for r in rows)
    assert {r["model"] for r in rows} == {directory.name}


@pytest.mark.slow
def test_worker_describes_with_an_original_format_model_given_vision(tmp_path, checkpoints, make_raster):
    from tests.service.test_cli_worker import WorkerProcess
    from tests.service.test_service import INSIDE, UTM

    directory, _ = checkpoints["llava-original-bin"]
    vision = json.loads((directory / "config.json").read_text())["mm_vision_tower"]
    worker = WorkerProcess("--model", str(directory), "--vision", vision, "--device", "cpu",
                           "--max-new-tokens", "3")
    try:
        worker.send({"id": "d", "type": "describe", "params": {
            "raster": make_raster(crs=UTM), "crs": "EPSG:4326", "regions": [{"id": "in", "wkt": INSIDE}]}})
        reply = worker.reply("d", timeout=180)
        assert reply["type"] == "ok", reply
        region = reply["result"]["regions"][0]
        assert region["error"] is None and region["description"] is not None
    finally:
        worker.close()


def test_cli_names_the_vision_option_when_the_tower_is_missing(tmp_path, checkpoints):
    directory, _ = checkpoints["llava-original-bin"]
    result = CliRunner().invoke(cli, ["regions", str(tmp_path / "x.tif"), "--aoi", str(tmp_path / "a.geojson"),
                                      "--model", str(directory), "--vision", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "--vision" in result.output and "Traceback" not in result.output


# ------------------------------------------------------------------ model-info
def test_model_info_says_what_each_directory_is(checkpoints, tiny_model_dir):
    def info(*args):
        result = CliRunner().invoke(cli, ["model-info", *args, "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    demo = info()
    assert demo["format"] == "mgimm" and demo["region_method"] == "region tokens"
    assert demo["trained_on"]["gsd_m"] == [0.3, 30.0] and demo["input_size"] == 126       # demo model v3
    assert demo["parameters"] > 1_000_000 and demo["memory_bytes"]["fp32"] == 4 * demo["parameters"]
    hf_dir, hf_reference = checkpoints["llava-hf"]
    hf = info(str(hf_dir))
    assert hf["format"] == "llava-hf" and hf["region_method"].startswith("box text")
    assert hf["parameters"] == sum(p.numel() for p in hf_reference.parameters())
    assert hf["trained_on"] is None and "USER:" in hf["prompt_template"]
    geochat_dir, _ = checkpoints["geochat"]
    geochat = info(str(geochat_dir))
    assert geochat["format"] == "geochat" and geochat["input_size"] == 504 and "geochat" in geochat["region_method"]
    assert geochat["vision_dir"]            # the vision tower's parameters are counted too
    text = CliRunner().invoke(cli, ["model-info", str(geochat_dir)]).output
    assert "GeoChat" in text and "vision tower" in text and "not stated" in text


def test_describe_warns_when_the_scene_gsd_is_far_from_the_models(tmp_path, make_raster, tiny_model_dir):
    from mgimm_core.model_card import gsd_warning

    card = {"imagery": "synthetic", "gsd_m": [0.5, 0.5]}
    assert gsd_warning(card, 0.6, "a.tif") is None and gsd_warning(card, 1.9, "a.tif") is None
    line = gsd_warning(card, 10.0, "a.tif")
    assert "a.tif" in line and "10 m" in line and "0.5 m" in line
    assert gsd_warning({}, 10.0, "a.tif") is None          # no card: nothing claimed
    # the demo model's card (0.3-30 m) makes a 200 m scene warn, in the summary and in `runs`
    from tests.service.test_service import ORIGIN, UTM, lonlat_polygon

    raster = make_raster(crs=UTM, res=200.0)                 # 200 m pixels, 64 x 48
    region = lonlat_polygon(ORIGIN[0] + 1000, ORIGIN[1] - 5000, ORIGIN[0] + 5000, ORIGIN[1] - 1000)
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "a"}, "geometry": json.loads(_wkt_to_geojson(region))}]}))
    out = tmp_path / "out.gpkg"
    result = CliRunner().invoke(cli, ["describe", raster, "--aoi", str(aoi), "-o", str(out), "--max-new-tokens",
                                      "2", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["warnings"] and "0.3-30 m" in summary["warnings"][0] and "200 m" in summary["warnings"][0]
    runs = pyogrio.read_dataframe(str(out), layer="runs")
    assert "0.3-30 m" in json.loads(runs["parameters"].iloc[0])["warnings"][0]


def _wkt_to_geojson(wkt: str) -> str:
    import shapely

    return shapely.to_geojson(shapely.from_wkt(wkt))
