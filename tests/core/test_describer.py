"""The Describer: both questions about a batch of chips, the vision tower run once for both."""

from __future__ import annotations

import pytest

from mgimm_core.describer import Describer
from mgimm_core.model.testing_mgimm import random_chip


@pytest.fixture(scope="module")
def describer(tiny_model_dir):
    return Describer.load(tiny_model_dir, device="cpu", max_new_tokens=6)


def chips(n=3):
    return [random_chip(40, 40, i) for i in range(n)], [(2.0, 2.0, 20.0 + i, 30.0) for i in range(n)], [None] * n


def test_vision_tower_runs_once_per_describe_and_answers_match_separate_questions(describer):
    calls = []
    hook = describer.model.vision_tower.register_forward_hook(lambda module, args, out: calls.append(1))
    try:
        images, boxes, masks = chips()
        both = describer.describe(images, boxes, masks)
        assert len(calls) == 1                                   # one vision pass for two questions
        attributes_only = describer.describe(images, boxes, masks, description=False)
        description_only = describer.describe(images, boxes, masks, attributes=False)
        assert len(calls) == 3
    finally:
        hook.remove()
    assert [r.attribute_text for r in both] == [r.attribute_text for r in attributes_only]
    assert [r.description for r in both] == [r.description for r in description_only]
    assert all(r.description is not None and r.attribute_text is not None for r in both)


def test_generate_from_pixels_equals_generate_from_precomputed_patches(describer):
    import numpy as np
    import torch

    images, boxes, masks = chips(2)
    processor, model = describer.processor, describer.model
    batch = processor(images, boxes=[np.asarray([b], dtype=np.float32) for b in boxes], masks=[[m] for m in masks],
                      prompts="describe", mode="global_region")
    with torch.inference_mode():
        patches = model.patch_features(batch["pixel_values"])
    from_pixels = model.generate(**batch, mode="global_region", max_new_tokens=5)
    rest = {k: v for k, v in batch.items() if k != "pixel_values"}
    from_patches = model.generate(**rest, patches=patches, mode="global_region", max_new_tokens=5)
    assert torch.equal(from_pixels, from_patches)


def test_each_region_answers_the_same_alone_as_in_a_batch_with_a_polygon_mask(describer):
    import numpy as np

    chip = random_chip(40, 56)
    boxes = [(0.0, 0.0, 20.0, 20.0), (10.0, 5.0, 50.0, 30.0), (30.0, 20.0, 56.0, 40.0)]
    polygon = np.zeros((40, 56), dtype=bool)
    polygon[5:30, 10:30] = True
    batched = describer.describe([chip] * 3, boxes, [None, polygon, None])
    alone = describer.describe([chip], boxes[1:2], [polygon])
    assert all(isinstance(r.description, str) and isinstance(r.attribute_text, str) for r in batched)
    assert (alone[0].description, alone[0].attribute_text) == (batched[1].description, batched[1].attribute_text)


def test_describe_runs_the_steps_its_options_and_family_ask_for(describer, tmp_path):
    # One sequence of steps for every family that runs in the MGIMM class: the LLaVA line (region as
    # box text) asks the same questions without the guide check and the agreement, which score
    # MGIMM's region-token attribute question; every family's class probability is scored last.
    from mgimm_core.agreeing import agreement
    from mgimm_core.model.testing_llava import write_llava_hf
    from mgimm_core.steps import ask_attributes, ask_description, ask_guides, judge_guides, score_objects

    assert describer.steps(guides=True) == [ask_attributes, ask_guides, judge_guides, ask_description, agreement,
                                            score_objects]
    assert describer.steps(description=False) == [ask_attributes, score_objects]
    assert describer.steps(attributes=False, guides=False) == (
        [ask_attributes, ask_description, agreement] if describer.questions.guided else [ask_description, agreement])
    llava = Describer.load(write_llava_hf(tmp_path / "llava")[0], device="cpu", max_new_tokens=3)
    assert llava.questions.attribute_mode == llava.questions.description_mode == "global"
    assert llava.steps(guides=True) == [ask_attributes, ask_guides, ask_description, score_objects]
    images, boxes, masks = chips(2)
    texts = llava.describe(images, boxes, masks, guides=[[(boxes[0], None)], []])
    assert [len(t.objects) for t in texts] == [1, 0] and texts[0].objects[0].attribute_text is not None
