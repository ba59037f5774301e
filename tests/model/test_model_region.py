"""Region interactive module: tokens per region, independence between regions, polygons honoured."""

import numpy as np
import pytest
import torch

from mgimm_core.errors import ModelError
from mgimm_core.model import demo_region_settings
from mgimm_core.model.region_mgimm import ZOOM_GRID, box_to_mask, mask_to_patch_fraction, zoom_view, zoom_windows
from mgimm_core.model.testing_mgimm import random_chip, tiny_model, tiny_processor

ZOOM = dict(demo_region_settings(), global_tokens=4)
ZOOM["region_tokens"] = (*ZOOM["region_tokens"], "zoom")
PIXELS = dict(demo_region_settings(), global_tokens=4)
PIXELS["region_tokens"] = (*PIXELS["region_tokens"], "pixels")
PIXEL_TOKEN = dict(demo_region_settings(), global_tokens=4)
PIXEL_TOKEN["region_tokens"] = (*PIXEL_TOKEN["region_tokens"], "pixel_token")
PRESETS = {"reference": {}, "demo": dict(demo_region_settings(), global_tokens=4), "zoom": ZOOM, "pixels": PIXELS,
           "pixel_token": PIXEL_TOKEN}


def region_tokens(model, batch):
    with torch.no_grad():
        patches = model.patch_features(batch["pixel_values"])
        return model.region_features(patches, batch["region_boxes"], batch.get("region_masks"),
                                     batch["region_valid"], batch["pixel_values"])


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


def _view(image: torch.Tensor, box: list[float]) -> torch.Tensor:
    return zoom_view(image[None, None], zoom_windows(torch.tensor([box]), image.shape[-1]))[0, 0]


def test_zoom_view_enlarges_a_small_region_at_most_four_times():
    image = torch.zeros(32, 32)
    image[10:12, 10:12] = 1.0                        # a 2 x 2 px object
    view = _view(image, [9.0, 9.0, 13.0, 13.0])      # 4 px box: the window is the 8 px floor (32 / 4)
    assert view.sum() == pytest.approx(4 * 16, rel=0.05)   # 4 px of object, 16x the area
    bright = (view > 0.5).nonzero().float()
    assert bright.min() >= 8 and bright.max() <= 24  # centred: the object is in the middle of the view


def test_zoom_window_stays_inside_the_input_and_large_boxes_are_not_zoomed():
    ramp = torch.arange(32.0)[None].expand(32, 32) + 0.5   # each pixel holds its x centre
    corner = _view(ramp, [0.0, 0.0, 2.0, 2.0])             # the 8 px window shifted to the image's corner
    assert corner.min() >= 0.5 - 1e-4 and corner.max() <= 8.0 + 1e-4 and corner.max() - corner.min() > 6.5
    whole = _view(ramp, [1.0, 2.0, 30.0, 31.0])            # 1.25 x 29 px > 32: the whole input, unchanged
    assert torch.allclose(whole, ramp, atol=1e-4)


def test_zoom_tokens_see_only_their_window_and_count_in_the_region_tokens():
    model = tiny_model(**ZOOM)
    processor = tiny_processor(model.config)
    assert model.config.tokens_per_region == 4 + 1 + ZOOM_GRID**2 == processor.tokens_per_region
    chip = random_chip(32, 32)
    box = np.array([[20, 20, 24, 24]])                     # its window: x and y 18..26 of the 32 px input
    zoom = slice(4, None)                                  # corners (2), pooled, geometry, then the zoom tokens
    before = region_tokens(model, processor(chip, boxes=box))[:, zoom]
    far = chip.copy()
    far[:12, :12] = 255 - far[:12, :12]                   # outside the window
    near = chip.copy()
    near[21, 21] = 255 - near[21, 21]                     # inside the region
    assert torch.equal(before, region_tokens(model, processor(far, boxes=box))[:, zoom])
    assert (before - region_tokens(model, processor(near, boxes=box))[:, zoom]).abs().max() > 1e-4


def test_zoom_model_needs_the_pixels_with_precomputed_patches():
    model = tiny_model(**ZOOM)
    processor = tiny_processor(model.config)
    batch = processor([random_chip(32, 32), random_chip(32, 32, 1)],
                      boxes=[np.array([[0, 0, 10, 10], [5, 5, 30, 20]]), np.array([[2, 2, 9, 9]])])
    args = (batch["input_ids"], batch["region_boxes"], batch.get("region_masks"), batch["region_valid"])
    with torch.no_grad():
        patches = model.patch_features(batch["pixel_values"])
        whole = model.embed_inputs(args[0], batch["pixel_values"], *args[1:])
        with pytest.raises(ModelError, match="pixel_values"):
            model.embed_inputs(args[0], None, *args[1:], patches=patches)
        reused = model.embed_inputs(args[0], batch["pixel_values"], *args[1:], patches=patches)
    assert torch.equal(whole, reused)


def test_zoom_window_follows_x_and_y_separately():
    xs = torch.arange(32.0)[None].expand(32, 32) + 0.5      # each pixel holds its x centre
    box = [20.0, 4.0, 24.0, 8.0]                              # centred at x 22, y 6: the 8 px window x 18..26, y 2..10
    assert _view(xs, box).min() >= 18 - 1e-4 and _view(xs, box).max() <= 26 + 1e-4
    ys = xs.T.contiguous()                                    # each pixel holds its y centre
    assert _view(ys, box).min() >= 2 - 1e-4 and _view(ys, box).max() <= 10 + 1e-4


def test_zoom_tokens_of_a_polygon_that_resamples_to_nothing_are_its_boxs():
    model = tiny_model(**ZOOM)
    processor = tiny_processor(model.config)
    chip = random_chip(32, 32)
    box = np.array([[8, 8, 20, 14]])
    as_box = region_tokens(model, processor(chip, boxes=box))
    nothing = region_tokens(model, processor(chip, boxes=box, masks=[np.zeros((32, 32), dtype=bool)]))
    assert torch.allclose(as_box, nothing)


def test_pixels_kind_sees_a_one_pixel_change_inside_its_region_only():
    model = tiny_model(**PIXELS)
    processor = tiny_processor(model.config)
    assert model.config.tokens_per_region == 4 == processor.tokens_per_region   # it adds to the pooled token
    proj = model.region_module.pixel_encoder.proj.weight
    box = np.array([[20, 20, 24, 24]])

    def pixel_term(chip):                                  # the pooled token with the encoder minus without it
        with torch.no_grad():
            proj.normal_(generator=torch.Generator().manual_seed(0))   # built at zero (a continuation's start)
            with_encoder = region_tokens(model, processor(chip, boxes=box))[:, 2]
            proj.zero_()
            return with_encoder - region_tokens(model, processor(chip, boxes=box))[:, 2]

    chip = random_chip(32, 32)
    before = pixel_term(chip)
    assert before.abs().max() > 1e-3
    far = chip.copy()
    far[:12, :12] = 255 - far[:12, :12]                   # away from the region (beyond the encoder's reach)
    near = chip.copy()
    near[21, 21] = 255 - near[21, 21]                     # one pixel inside the region
    assert torch.allclose(before, pixel_term(far), atol=1e-6)
    assert (before - pixel_term(near)).abs().max() > 1e-4


def test_pixels_kind_added_to_a_trained_model_starts_from_its_answers():
    """training/demo_recipe.py `add_region_tokens`: what the kind adds is zero until it trains, so
    the continued model's region tokens, and what it was, are kept exactly."""
    from training.demo_recipe import add_region_tokens, trainable_groups

    model = tiny_model(**PRESETS["demo"])
    processor = tiny_processor(model.config)
    chip, box = random_chip(32, 32), np.array([[3, 4, 20, 18]])
    before = region_tokens(model, processor(chip, boxes=box))
    add_region_tokens(model, processor, "pixels")
    after = region_tokens(model, processor(chip, boxes=box))
    assert after.shape[1] == before.shape[1] == processor.tokens_per_region
    assert torch.equal(after, before)
    groups = trainable_groups(model, 1e-4, 1e-3)
    encoder = {id(p) for p in model.region_module.pixel_encoder.parameters()}
    assert [g["lr"] for g in groups] == [1e-4, 1e-3]
    assert {id(p) for p in groups[1]["params"]} == encoder
    assert not encoder & {id(p) for p in groups[0]["params"]}


def test_pixels_kind_needs_the_pooled_token():
    settings = dict(demo_region_settings(), global_tokens=4, region_tokens=("corners", "pixels"))
    with pytest.raises(ValueError, match="pooled"):
        tiny_model(**settings)


def test_pixel_token_is_the_encoder_as_a_token_of_its_own():
    """Kind "pixel_token": the chip's pixels under the region as one more token (the pooled token
    left as it is), zero until it trains; not listed together with "pixels"."""
    plain, own = tiny_model(**PRESETS["demo"]), tiny_model(**PIXEL_TOKEN)
    own.load_state_dict(plain.state_dict(), strict=False)
    processor = tiny_processor(own.config)
    assert own.config.tokens_per_region == plain.config.tokens_per_region + 1 == processor.tokens_per_region
    chip, box = random_chip(32, 32), np.array([[20, 20, 24, 24]])
    before = region_tokens(plain, tiny_processor(plain.config)(chip, boxes=box))
    with torch.no_grad():
        own.region_module.pixel_encoder.proj.weight.normal_(generator=torch.Generator().manual_seed(0))
    tokens = region_tokens(own, processor(chip, boxes=box))
    assert torch.allclose(tokens[:, :-1], before, atol=1e-6)        # the other tokens are unchanged
    near = chip.copy()
    near[21, 21] = 255 - near[21, 21]                              # one pixel inside the region
    assert (tokens[:, -1] - region_tokens(own, processor(near, boxes=box))[:, -1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="one of them"):
        tiny_model(**dict(PIXEL_TOKEN, region_tokens=(*PIXEL_TOKEN["region_tokens"], "pixels")))
