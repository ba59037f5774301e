"""A model whose region tokens include a zoomed view ("zoom") needs the chips' pixels beside their
precomputed patch features: the describer passes them on every question (attributes, guide checks,
descriptions), and its answers are those of the model called on the pixels alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgimm_core.answers import GUIDE_CONFIRMED, GUIDE_NOT_FOUND
from mgimm_core.describer import Describer
from mgimm_core.model import demo_region_settings
from mgimm_core.model.constrained_mgimm import append_tokens
from mgimm_core.model.testing_mgimm import random_chip, tiny_model, tiny_processor


@pytest.fixture(scope="module")
def zoom_model_dir(tmp_path_factory) -> str:
    settings = dict(demo_region_settings(), global_tokens=4)
    settings["region_tokens"] = (*settings["region_tokens"], "zoom")
    model = tiny_model(**settings)
    directory = tmp_path_factory.mktemp("zoom_model")
    model.save_pretrained(str(directory))
    tiny_processor(model.config).save_pretrained(str(directory))
    return str(directory)


def test_describer_scores_a_zoom_model_as_the_model_does_on_the_pixels(zoom_model_dir):
    describer = Describer.load(zoom_model_dir, device="cpu", max_new_tokens=8)
    assert describer.model.config.region_needs_pixels
    chips = [random_chip(32, 32, seed=s) for s in range(2)]
    regions = [[((4.0, 4.0, 9.0, 9.0), None)], [((20.0, 2.0, 30.0, 12.0), None)]]
    answers = [[7, 8], [9, 10]]
    scored = describer.score(chips, regions, "describe", "region", describer.patches(chips), answers, [2, 2])
    batch = describer.inputs(chips, regions, "describe", "region")
    assert "pixel_values" in batch
    ids, attention = append_tokens(batch["input_ids"], batch["attention_mask"], answers, describer._pad_id)
    with torch.no_grad():
        logits = describer.model(input_ids=ids, attention_mask=attention, pixel_values=batch["pixel_values"],
                                 region_boxes=batch["region_boxes"], region_valid=batch["region_valid"],
                                 mode="region").logits.float().log_softmax(-1)
    direct = [float(logits[row, -3:-1].gather(-1, ids[row, -2:, None]).sum()) for row in range(2)]
    assert scored == pytest.approx(direct, abs=1e-5)


def test_a_zoom_model_describes_guided_regions(zoom_model_dir):
    describer = Describer.load(zoom_model_dir, device="cpu", max_new_tokens=8)
    chips = [random_chip(32, 32, seed=s) for s in range(3)]
    guide = ((8.0, 8.0, 12.0, 12.0), np.ones((32, 32), dtype=bool))
    results = describer.describe(chips, [(2.0, 2.0, 30.0, 30.0)] * 3, [None] * 3, guides=[[guide]] * 3)
    assert len(results) == 3
    assert all(o.guide_status in (GUIDE_CONFIRMED, GUIDE_NOT_FOUND) for r in results for o in r.objects)
    assert all(isinstance(r.description, str) for r in results)
