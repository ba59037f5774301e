"""The demo model's recipe end to end at smoke size, and the samples it trains on."""

import json

import numpy as np

from mgimm_core.describer import Describer
from mgimm_core.prompts import ATTRIBUTE_PROMPT, DESCRIPTION_PROMPT
from mgimm_core.vocabulary import parse_attributes
from training.__main__ import main
from training.demo_data import generate_samples
from training.demo_model import demo_vocabulary, words_of


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
        parsed = parse_attributes(s.answer)
        assert all(parsed[k] == s.attributes[k] for k in ("name", "color", "shape", "size"))
    assert all(s.prompt == DESCRIPTION_PROMPT for s in samples if s.kind == "description")


def test_vocabulary_covers_prompts_and_answers():
    samples = generate_samples([6], scene_size=512, model_input=128, descriptions_per_scene=2)
    vocab = set(demo_vocabulary([s.answer for s in samples]))
    for text in [ATTRIBUTE_PROMPT, DESCRIPTION_PROMPT] + [s.answer for s in samples]:
        assert set(words_of(text)) <= vocab


def test_smoke_recipe_trains_evaluates_and_exports_a_loadable_model(tmp_path, capsys):
    out, export = tmp_path / "run", tmp_path / "model"
    assert main(["demo", "--out", str(out), "--preset", "smoke", "--export", str(export)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stages"]["stage1"]["steps"] == 6 and summary["stages"]["stage2"]["steps"] == 6
    assert "CIDEr" in summary["captions"] and summary["attributes"]["count"] > 0
    assert (export / "README.md").read_text().startswith("# mgimm-geo demo model")
    describer = Describer.load(export, device="cpu", max_new_tokens=3)
    chip = np.zeros((64, 64, 3), np.uint8)
    [text] = describer.describe([chip], [(8, 8, 40, 40)], [None])
    assert text.description is not None and text.attribute_text is not None
