"""Crafted-broken model folders: every one is a model error with a message, never a traceback, on
`model-info` and on `describe` (issue: tracebacks from 15 crafted folders; none ran code)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from batch.cli import cli


def _json(name, value):
    def craft(d: Path):
        (d / name).write_text(value if isinstance(value, str) else json.dumps(value))
    return craft


def _config(**changes):
    def craft(d: Path):
        config = json.loads((d / "config.json").read_text())
        for key, value in changes.items():
            if value is _DROP:
                config.pop(key, None)
            else:
                config[key] = value
        (d / "config.json").write_text(json.dumps(config))
    return craft


_DROP = object()


def _weights(data: bytes):
    def craft(d: Path):
        for f in d.glob("*.safetensors"):
            f.unlink()
        (d / "model.safetensors").write_bytes(data)
    return craft


def _no_weights(d: Path):
    for f in d.glob("*.safetensors"):
        f.unlink()


def _index_to_missing_shard(d: Path):
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}}))


def _index_not_a_map(d: Path):
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["x"]}))


def _header(payload: dict) -> bytes:
    header = json.dumps(payload).encode()
    return struct.pack("<Q", len(header)) + header


CASES = {
    "config not json": _json("config.json", "{not json"),
    "config a list": _json("config.json", [1, 2]),
    "model_type a list": _config(model_type=["mgimm"]),
    "model_type unknown": _config(model_type="bert"),
    "vision_config a string": _config(vision_config="clip"),
    "image_size a string": _config(image_size="big"),
    "text_config missing": _config(text_config=_DROP),
    "processor file a list": _json("mgimm_processor.json", [1]),
    "processor file not json": _json("mgimm_processor.json", "]["),
    "card not json": _json("model_card.json", "{"),
    "no weights": _no_weights,
    "weights truncated": _weights(b"\x08\x00"),
    "weights header garbage": _weights(struct.pack("<Q", 12) + b"not json at "),
    "weights header huge": _weights(struct.pack("<Q", 2**60) + b"{}"),
    "weights wrong shapes": _weights(_header({"x": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}})
                                     + b"\0" * 16),
    "index to a missing shard": _index_to_missing_shard,
    "index map not a dict": _index_not_a_map,
    "tokenizer not json": _json("tokenizer.json", "{"),
}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    d = tmp_path_factory.mktemp("crafted_scene")
    path = d / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10)) as ds:
        ds.write(np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8))
    return str(path), "POLYGON ((500100 3999700, 500300 3999700, 500300 3999900, 500100 3999900, 500100 3999700))"


def _no_traceback(result, folder: Path) -> None:
    """Either the command works (facts that do not need the broken part) or it fails as a model
    error: exit 1, a message naming the folder, no exception escaping."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code != 0:
        assert result.exit_code == 1 and str(folder) in result.output, result.output


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_crafted_broken_folder_is_a_model_error_everywhere(case, tmp_path, tiny_model_dir, scene):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    CASES[case](folder)
    runner = CliRunner()
    info = runner.invoke(cli, ["model-info", str(folder), "--json"])
    described = runner.invoke(cli, ["describe", scene[0], "--aoi", scene[1], "--aoi-crs", "EPSG:32633",
                                    "-o", str(tmp_path / "out.gpkg"), "--model", str(folder), "--threads", "1"])
    _no_traceback(info, folder)
    _no_traceback(described, folder)
    if case not in WORKS:
        assert described.exit_code == 1


#: Breakage describe does not depend on (it reads what it needs elsewhere): it may run.
WORKS = {"card not json", "image_size a string", "index to a missing shard", "index map not a dict"}
