"""Region interactive module: tokens per region, independence between regions, polygons honoured."""

import numpy as np
import pytest
import torch

from mgimm_core.model import demo_region_settings
from mgimm_core.model.region_mgimm import box_to_mask, mask_to_patch_fraction
from mgimm_core.model.testing_mgimm import random_chip, tiny_model, tiny_processor

PRESETS = {"reference": {}, "demo": dict(demo_region_settings(), global_tokens=4)}


def region_tokens(model, batch):
    with torch.no_grad():
        patches = model.patch_features(batch["pixel_values"])
        return model.region_features(patches, batch["region_boxes"], batch.get("region_masks"),
                                     batch["region_valid"])


def test_box_to_mask_uses_pixel_centres_and_never_empties():
    mask = box_to_mask(torch.tensor([[0.0, 0.0, 8.0, 4.0], [10.2, 10.2, 10.4, 10.4]]), 16)
    assert mask[0].sum() == 32 and mask[0, :4, :8].all()
    assert mask[1].sum() == 1 and mask[1, 10, 10]


def test_patch_fraction_is_area_covered():
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[0:4, 0:8] = True  # half of patch (0, 0)
    fraction = mask_to_patch_fraction(mask, 4)
    assert fraction[0, 0] == pytest.approx(0.5) and fraction.sum() == pytest.approx(0.5)


@pytest.mark.parametrize("preset", PRESETS)
def test_shapes_and_padding(preset):
    model = tiny_model(**PRESETS[preset])
    processor = tiny_processor(model.config)
    batch = processor([random_chip(32, 32), random_chip(32, 32, 1)],
                      boxes=[np.array([[0, 0, 10, 10], [5, 5, 30, 20], [1, 1, 4, 4]]), np.array([[2, 2, 9, 9]])])
    assert batch["region_boxes"].shape == (2, 3, 4)
    assert batch["region_valid"].tolist() == [[True, True, True], [True, False, False]]
    tokens = region_tokens(model, batch)
    assert tokens.shape == (4, model.config.tokens_per_region, model.config.vision_config.hidden_size)


@pytest.mark.parametrize("preset", PRESETS)
def test_moving_a_box_changes_only_its_tokens(preset):
    model = tiny_model(**PRESETS[preset])
    processor = tiny_processor(model.config)
    chips = [random_chip(32, 32), random_chip(32, 32, 1)]
    boxes = [np.array([[0, 0, 10, 10], [5, 5, 30, 20]]), np.array([[2, 2, 9, 9]])]
    before = region_tokens(model, processor(chips, boxes=boxes))
    moved = [np.array([[0, 0, 10, 10], [12, 14, 31, 30]]), boxes[1]]
    after = region_tokens(model, processor(chips, boxes=moved))
    assert not torch.allclose(before[1], after[1])
    assert torch.equal(before[0], after[0]) and torch.equal(before[2], after[2])


@pytest.mark.parametrize("preset", PRESETS)
def test_polygon_differs_from_its_bounding_box(preset):
    model = tiny_model(**PRESETS[preset])
    processor = tiny_processor(model.config)
    chip = random_chip(32, 32)
    triangle = np.tril(np.ones((32, 32), dtype=bool))[:, ::-1].copy()  # upper-left triangle of the box
    triangle[:, 24:] = False
    triangle[24:, :] = False
    box = np.array([[0, 0, 24, 24]])
    as_box = region_tokens(model, processor(chip, boxes=box))
    as_polygon = region_tokens(model, processor(chip, boxes=box, masks=[triangle]))
    assert (as_box - as_polygon).abs().max() > 1e-4


def test_masked_attention_ignores_patches_outside_the_region():
    model = tiny_model(**demo_region_settings())
    processor = tiny_processor(model.config)
    chip = random_chip(32, 32)
    batch = processor(chip, boxes=np.array([[0, 0, 16, 16]]))
    with torch.no_grad():
        patches = model.patch_features(batch["pixel_values"])
        changed = patches.clone()
        changed[:, -1] += 5.0  # bottom-right patch, outside the box
        args = (batch["region_boxes"], None, batch["region_valid"])
        # The dense mask embedding marks that patch "outside" either way; with masked attention
        # nothing reads it, so every token stays the same.
        assert torch.allclose(model.region_features(patches, *args), model.region_features(changed, *args))
