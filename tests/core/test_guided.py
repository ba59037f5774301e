"""Attribute-guided descriptions: guide objects as region prompts, the objects layer, "no distinct
object", unknown prompt words, the repetition guard and the agreement measures.

Real GeoTIFFs and GeoPackages, a tiny random MGIMM (its words are noise: these tests check that the
right inputs reach the model and the right rows come out; what the trained demo model says is
measured by training/agreement.py).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import Counter

import numpy as np
import pyogrio
import pytest
import torch
from click.testing import CliRunner

from batch.cli import cli
from mgimm_core.describer import Describer
from mgimm_core.engines import LoadOptions
from mgimm_core.errors import OptionsError
from mgimm_core.model.testing_mgimm import random_chip
from training.synthetic.demo_inputs import write_demo_inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_demo_inputs(tmp_path_factory.mktemp("guided_inputs"), seed=7, size=512, objects=6)


@pytest.fixture(scope="module")
def describer(tiny_model_dir):
    return Describer.load(tiny_model_dir, device="cpu", max_new_tokens=3)


def run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def square_mask(size, x0, y0, x1, y1):
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_guide_polygons_reach_the_model_as_region_tokens(describer, monkeypatch):
    seen = []
    generate = describer.model.generate

    def spy(**inputs):            # records what reaches the model, then runs it unchanged
        seen.append(inputs)
        return generate(**inputs)

    monkeypatch.setattr(describer.model, "generate", spy)
    chip = random_chip(32, 32, seed=1)
    region = ((0.0, 0.0, 32.0, 32.0), None)

    def description_inputs(guide_box):
        seen.clear()
        x0, y0, x1, y1 = guide_box
        guide = ((float(x0), float(y0), float(x1), float(y1)), square_mask(32, x0, y0, x1, y1))
        texts = describer.describe([chip], [region[0]], [region[1]], guides=[[guide]])
        assert len(texts[0].objects) == 1 and texts[0].objects[0].attribute_text is not None
        return seen[-1]           # the description question comes last

    first = description_inputs((2, 2, 10, 10))
    moved = description_inputs((20, 18, 30, 28))
    assert first["region_boxes"].shape == (1, 2, 4) and bool(first["region_valid"].all())
    torch.testing.assert_close(first["region_boxes"][0, 1], torch.tensor([2.0, 2.0, 10.0, 10.0]))
    torch.testing.assert_close(moved["region_boxes"][0, 1], torch.tensor([20.0, 18.0, 30.0, 28.0]))
    with torch.no_grad():
        embeds = [describer.model.embed_inputs(s["input_ids"], None, s["region_boxes"], s.get("region_masks"),
                                               s["region_valid"], "global_region", s["patches"])
                  for s in (first, moved)]
    assert embeds[0].shape == embeds[1].shape
    assert (embeds[0] - embeds[1]).abs().max() > 1e-4      # moving the guide changes the sequence


def test_guided_tiles_write_objects_linked_to_their_tiles_and_resume(tmp_path, tiny_model_dir, inputs):
    out = tmp_path / "guided.gpkg"
    args = ["describe", str(inputs.scene), "--tiles", "--tile-size", "256", "--guide", str(inputs.truth),
            "--max-guides", "3", "-o", str(out), "--model", tiny_model_dir, "--max-new-tokens", "3", "-q"]
    result = run(args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    tiles = pyogrio.read_dataframe(str(out), layer="tiles")
    objects = pyogrio.read_dataframe(str(out), layer="objects")
    assert summary["objects"] == len(objects) > 0
    assert set(objects["parent_layer"]) == {"tiles"}
    assert set(objects["parent_id"].astype(int)) <= set(tiles["tile_index"])
    per_tile = Counter(objects["parent_id"].astype(int))
    for _, tile in tiles.iterrows():
        assert per_tile.get(int(tile["tile_index"]), 0) == tile["guide_objects"] <= 3
    truth = pyogrio.read_dataframe(str(inputs.truth))
    assert tiles["guide_objects"].sum() + tiles["guide_objects_left"].sum() <= len(truth)
    assert tiles["guide_objects_left"].sum() > 0          # more than 3 objects in some tile: counted
    assert objects["attribute_text"].notna().all()
    # a guided run resumes like any other: failed tiles are redone with their objects, once
    with sqlite3.connect(out) as db:
        db.execute("UPDATE tiles SET error = 'boom' WHERE tile_index IN (0, 1)")
    result = run(args + ["--resume"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["described"] == 2
    again = pyogrio.read_dataframe(str(out), layer="objects")
    assert len(again) == len(objects)
    assert Counter(again["parent_id"]) == Counter(objects["parent_id"])


def test_guided_aois_link_objects_to_region_rows(tmp_path, tiny_model_dir, inputs):
    out = tmp_path / "aoi_guided.gpkg"
    result = run(["describe", str(inputs.scene), "--aoi", str(inputs.aoi), "--guide", str(inputs.truth),
                  "-o", str(out), "--model", tiny_model_dir, "--max-new-tokens", "3", "-q"])
    assert result.exit_code == 0, result.output
    regions = pyogrio.read_dataframe(str(out), layer="regions")
    objects = pyogrio.read_dataframe(str(out), layer="objects")
    assert set(objects["parent_layer"]) == {"regions"}
    assert set(objects["parent_id"]) <= set(regions["region_id"])
    area = regions[regions["region_id"] == "area-1"].iloc[0]
    assert area["guide_objects"] >= 1                      # the large area holds several objects


def test_no_distinct_object_answer_is_object_none():
    from mgimm_core.answers import RegionText

    text = RegionText()
    Describer.set_attributes(text, "no distinct objects, mainly farmland")
    assert text.attributes == {"name": "none"}
    Describer.set_attributes(text, "a small white circular storage tank")
    assert text.attributes["name"] == "storage tank" and text.attributes["color"] == "white"


def test_unknown_prompt_words_are_listed_and_refused_with_strict(tmp_path, tiny_model_dir, inputs, describer):
    assert describer.unknown_words("describe the crops and the orchards") == ["crops", "and", "orchards"]
    assert describer.unknown_words("describe the red car") == []
    args = ["describe", str(inputs.scene), "--aoi", str(inputs.aoi), "--model", tiny_model_dir,
            "--max-new-tokens", "2", "-q", "--prompt", "What crops are grown here?"]
    done = subprocess.run([sys.executable, "-m", "batch.cli", *args, "-o", str(tmp_path / "a.gpkg")],
                          capture_output=True, text=True, timeout=180)    # the real CLI's stderr
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stderr.splitlines() if "does not know" in line]
    assert len(warning) == 1 and "crops" in warning[0] and "model-info --words" in warning[0]
    strict = CliRunner().invoke(cli, args + ["-o", str(tmp_path / "b.gpkg"), "--strict"])
    assert strict.exit_code == 2, strict.output         # a usage error, naming --prompt
    assert "--prompt" in strict.output and "crops" in strict.output and "Traceback" not in strict.output
    assert not (tmp_path / "b.gpkg").exists()              # refused before anything was written
    words = CliRunner().invoke(cli, ["model-info", tiny_model_dir, "--words"])
    assert words.exit_code == 0 and "describe" in words.stdout.split() and "crops" not in words.stdout.split()


def test_repetition_guard_blocks_repeated_ngrams(tiny_model_dir):
    guarded = Describer.load(tiny_model_dir, device="cpu", max_new_tokens=24, no_repeat_ngram=2)
    plain = Describer.load(tiny_model_dir, device="cpu", max_new_tokens=24)
    chips = [random_chip(32, 32, seed=s) for s in range(4)]
    boxes = [(2.0, 2.0, 30.0, 30.0)] * 4

    def bigrams(describer):
        batch = describer.processor(chips, boxes=[np.array([b]) for b in boxes], prompts="describe",
                                    mode="global_region")
        with torch.no_grad():
            ids = describer.model.generate(**batch, mode="global_region", max_new_tokens=24,
                                           **describer.generate_options)
        pad = describer.processor.tokenizer.pad_token_id
        counts = []
        for row in ids.tolist():
            row = [t for t in row if t != pad]
            pairs = list(zip(row, row[1:]))
            counts.append(len(pairs) - len(set(pairs)))
        return counts

    assert all(c == 0 for c in bigrams(guarded))
    assert any(c > 0 for c in bigrams(plain))             # the random model does loop without it
    with pytest.raises(OptionsError):
        LoadOptions(no_repeat_ngram=1)


def test_demo_samples_carry_guidance_multi_region_and_empty_regions():
    from training.demo_data import generate_samples

    samples = generate_samples([1, 2], scene_size=512, model_input=128, descriptions_per_scene=8,
                               object_descriptions_per_scene=2, no_object_regions_per_scene=2)
    empty = [s for s in samples if s.kind == "region" and s.answer.startswith("no distinct objects, mainly ")]
    assert empty
    descriptions = [s for s in samples if s.kind == "description"]
    assert descriptions and all("Attributes:" in s.prompt for s in descriptions)
    guided = [s for s in descriptions if s.guides]
    assert guided and all(len(s.guide_attributes) == len(s.guides) for s in guided)
    for s in guided:
        for attrs in s.guide_attributes:
            assert attrs["name"] in s.prompt


def test_processor_files_may_state_chip_settings(tmp_path, tiny_model_dir):
    # mgimm_core/model_dir.py reads chip_context / chip_min_window from mgimm_processor.json; the
    # processor must load such a file too (and keep the settings when it saves).
    import shutil

    from mgimm_core.model import MGIMMProcessor
    from mgimm_core.model_dir import ModelDirectory

    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir, directory)
    path = directory / "mgimm_processor.json"
    settings = json.loads(path.read_text())
    settings.update(chip_context=0.4, chip_min_window=24)
    path.write_text(json.dumps(settings))
    processor = MGIMMProcessor.from_pretrained(directory)
    assert (processor.chip_context, processor.chip_min_window) == (0.4, 24)
    processor.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "mgimm_processor.json").read_text())["chip_min_window"] == 24
    chip = ModelDirectory.resolve(directory).chip
    assert (chip.context, chip.min_window) == (0.4, 24)


def test_global_only_models_describe_from_global_tokens(tiny_model_dir, tmp_path, monkeypatch):
    # A model trained with descriptions from global tokens alone (config mode "global": the
    # ablation's variant, the reference's shipped fine-tune path) is asked its description that way.
    import shutil

    directory = tmp_path / "global_only"
    shutil.copytree(tiny_model_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | {"mode": "global"}))
    modes = {}
    for name, path in (("stage 2", tiny_model_dir), ("global only", directory)):
        describer = Describer.load(path, device="cpu", max_new_tokens=3)
        seen = []
        generate = describer.model.generate

        def spy(_seen=seen, _generate=generate, **inputs):   # records what reaches the model, then runs it
            _seen.append(inputs)
            return _generate(**inputs)

        monkeypatch.setattr(describer.model, "generate", spy)
        describer.describe([random_chip(32, 32)], [(2.0, 2.0, 30.0, 30.0)], [None])
        modes[name] = (seen[0]["mode"], seen[-1]["mode"], seen[-1]["input_ids"].shape[1])
    assert modes["stage 2"][:2] == ("region", "global_region")
    assert modes["global only"][:2] == ("region", "global")
    assert modes["global only"][2] < modes["stage 2"][2]          # no region tokens in the sequence


def guided_args(inputs, out, model, *extra):
    return ["describe", str(inputs.scene), "--aoi", str(inputs.aoi), "--guide", str(inputs.truth), "-o", str(out),
            "--model", model, "--max-new-tokens", "3", "-q", *extra]


def objects_per_row(out) -> tuple[dict, Counter]:
    """guide_objects of each region row, and the objects the objects layer holds per parent."""
    regions = pyogrio.read_dataframe(str(out), layer="regions", read_geometry=False)
    layers = [name for name, _ in pyogrio.list_layers(str(out))]
    objects = (pyogrio.read_dataframe(str(out), layer="objects", read_geometry=False) if "objects" in layers
               else None)
    held = Counter() if objects is None else Counter(objects["parent_id"])
    return dict(zip(regions["region_id"], regions["guide_objects"])), held


def test_a_batch_commits_its_rows_and_their_guide_objects_together(tmp_path, tiny_model_dir, inputs, monkeypatch):
    # A process dying while it writes a batch's guide objects (here: an interrupt inside the insert)
    # must not leave that batch's regions marked done without their objects.
    from mgimm_core.output import gpkg

    out = tmp_path / "interrupted.gpkg"
    insert, calls = gpkg.insert_features, Counter()

    def dies_on_the_second_objects_insert(conn, table, *args, **kwargs):
        calls[table] += 1
        if table == "objects" and calls[table] == 2:
            raise KeyboardInterrupt
        return insert(conn, table, *args, **kwargs)

    monkeypatch.setattr(gpkg, "insert_features", dies_on_the_second_objects_insert)
    result = CliRunner().invoke(cli, guided_args(inputs, out, tiny_model_dir, "--batch-size", "2"))
    assert result.exit_code == 130, result.output
    monkeypatch.setattr(gpkg, "insert_features", insert)
    counts, held = objects_per_row(out)
    assert len(counts) == 2                                # the first batch, whole
    assert all(held[rid] == n for rid, n in counts.items()), (counts, held)
    result = run(guided_args(inputs, out, tiny_model_dir, "--batch-size", "2", "--resume"))
    assert result.exit_code == 0, result.output
    counts, held = objects_per_row(out)
    assert len(counts) == 7 and all(held[rid] == n > 0 for rid, n in counts.items()), (counts, held)


def test_resume_redoes_rows_whose_guide_objects_are_missing(tmp_path, tiny_model_dir, inputs, caplog):
    # An output left by a run that committed regions and objects apart and died between the two:
    # rows marked done whose objects were never written are described again, with a warning.
    from mgimm_core.output import completed_region_keys

    out = tmp_path / "lost.gpkg"
    assert run(guided_args(inputs, out, tiny_model_dir)).exit_code == 0
    counts, held = objects_per_row(out)
    lost = sorted(counts)[:3]
    with sqlite3.connect(out) as db:
        db.executemany("DELETE FROM objects WHERE parent_id = ?", [(rid,) for rid in lost])
    assert {rid for _, rid in completed_region_keys(out)} == set(counts) - set(lost)
    result = run(guided_args(inputs, out, tiny_model_dir, "--resume"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["described"] == len(lost) and summary["already_done"] == len(counts) - len(lost)
    assert any("guide objects" in r.message and lost[0] in r.message for r in caplog.records)
    after, held_after = objects_per_row(out)
    assert after == counts and held_after == held


def test_a_guided_run_to_flatgeobuf_writes_its_objects_beside_it(tmp_path, tiny_model_dir, inputs):
    out = tmp_path / "guided.fgb"
    result = run(guided_args(inputs, out, tiny_model_dir))
    assert result.exit_code == 0, result.output
    regions = pyogrio.read_dataframe(str(out))
    objects = pyogrio.read_dataframe(str(tmp_path / "guided_objects.fgb"))
    assert json.loads(result.stdout)["objects"] == len(objects) == regions["guide_objects"].sum() > 0
    assert set(objects["parent_id"]) <= set(regions["region_id"])
    assert set(objects.geometry.geom_type) == {"MultiPolygon"}
    assert objects.crs == pyogrio.read_dataframe(str(inputs.truth)).crs           # the guide layer's own CRS
    assert json.loads((tmp_path / "guided_runs.json").read_text())["status"] == "finished"


def test_box_text_families_answer_each_guide_object_so_resume_finds_them_all(tmp_path, inputs):
    """LLaVA-1.5-line models take guides as box text (one attribute question per guide): every row's
    guide_objects count is written as objects, so --resume has nothing to redo."""
    from mgimm_core.model.testing_llava import write_llava_hf

    model_dir, _ = write_llava_hf(tmp_path / "llava_hf")
    out = tmp_path / "llava_guided.gpkg"
    result = run(["describe", str(inputs.scene), "--aoi", str(inputs.aoi), "--guide", str(inputs.truth), "-o",
                  str(out), "--model", str(model_dir), "--max-new-tokens", "3", "-q"])
    assert result.exit_code == 0, result.output
    regions = pyogrio.read_dataframe(str(out), layer="regions")
    objects = pyogrio.read_dataframe(str(out), layer="objects")
    assert regions["guide_objects"].sum() >= 1
    assert len(objects) == regions["guide_objects"].sum()
    resumed = run(["describe", str(inputs.scene), "--aoi", str(inputs.aoi), "--guide", str(inputs.truth), "-o",
                   str(out), "--model", str(model_dir), "--max-new-tokens", "3", "--resume"])
    assert resumed.exit_code == 0 and "lack guide objects" not in resumed.output
