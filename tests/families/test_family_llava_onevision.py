"""LLaVA-OneVision (-hf) through the family registry, on a tiny random checkpoint in the real on-disk format
written by mgimm_core/model/testing_llava_onevision.py; the yardstick is transformers' own
LlavaOnevisionForConditionalGeneration and LlavaOnevisionProcessor. The region is an outline drawn on the
chip by default, LLaVA-1.5's 0..1 box text on request (mgimm_core/families/llava_onevision.py says why)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.families.family_checks import (box_codec, check_model_info, describe_rows, map_round_trip, polygons_on_scene,
                           transformers_logits)
from PIL import Image

from mgimm_core.families import family, marks
from mgimm_core.model.testing_llava_onevision import SIGLIP_MEAN, SIGLIP_STD, write_llava_onevision
from mgimm_core.model.testing_mgimm import random_chip

TILE = 32       # the tiny checkpoint's tile (384 in the real ones)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_llava_onevision(tmp_path_factory.mktemp("onevision") / "llava-onevision-tiny-ov-hf")


def load(directory, **options):
    from mgimm_core.describer import load_describer
    from mgimm_core.engines import LoadOptions

    return load_describer(directory, options=LoadOptions(device="cpu", **options))


def red_box_by_hand(chip, box):
    """The chip with the box's edges painted red, one pixel wide (box on integer pixel edges)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    image = chip.copy()
    image[y1, x1:x2] = image[y2 - 1, x1:x2] = (255, 0, 0)
    image[y1:y2, x1] = image[y1:y2, x2 - 1] = (255, 0, 0)
    return image


# ------------------------------------------------------------------ a. model-info
def test_model_info_recognises_the_folder(checkpoint):
    directory, reference = checkpoint
    info = check_model_info(directory, reference, "llava-onevision", region_convention="unit_box", region_as="outline",
                            region_ways=["text", "outline", "crop"], region_method="outline drawn on the chip",
                            input_size=TILE, non_commercial=False)
    assert "Apache-2.0" in info["licence"]


# ------------------------------------------------------------------ b. logits equal transformers' own
@pytest.mark.parametrize("size", [(TILE, TILE), (20, 20), (45, 70)])
def test_logits_equal_transformers_llava_onevision(checkpoint, size):
    """Our path (registry load, the outline drawn by marks.outline, family.chat_text + model_inputs) against
    LlavaOnevisionForConditionalGeneration.from_pretrained on inputs the processor's own chat API builds
    from a chip outlined by hand: same tokens, same pixels, same logits (fp32)."""
    from transformers import LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor

    directory, _ = checkpoint
    h, w = size
    chip = random_chip(h, w, seed=3)
    box = (2.0, 3.0, w - 5.0, h - 4.0)
    describer = load(directory)
    view = describer.view(chip, box, None)
    assert np.array_equal(view.image, red_box_by_hand(chip, box))
    text = describer.family.chat_text(describer.processor, f"What is {view.region}?")
    ours_inputs = describer.family.model_inputs(describer.processor, [Image.fromarray(view.image)], [text])
    theirs, theirs_inputs = transformers_logits(directory, LlavaOnevisionProcessor,
                                               LlavaOnevisionForConditionalGeneration, red_box_by_hand(chip, box),
                                               "What is the region outlined in red?")
    with torch.no_grad():
        ours = describer.model(**ours_inputs).logits
    assert torch.equal(ours_inputs["input_ids"], theirs_inputs["input_ids"])
    diff = (ours - theirs).abs().max().item()
    print(f"llava-onevision logits max abs diff {size}: {diff:.3g}")
    assert diff < 1e-4
    with torch.no_grad():   # the image reaches the model: another chip moves the logits
        other = describer.family.model_inputs(describer.processor, [Image.fromarray(random_chip(h, w, seed=9))],
                                              [text])
        assert (describer.model(**other).logits - ours).abs().max().item() > 1e-3


# ------------------------------------------------------------------ c. golden round trips
def test_outline_reaches_the_model_space_at_the_regions_pixels(checkpoint):
    """The default chip is the processor's base image undistorted: the outline drawn from the geo core's
    mask is, de-normalised from pixel_values, red at exactly the mask's edge pixels (the marks in the
    model's space give back the region's chip pixels exactly)."""
    describer = load(checkpoint[0])
    chip = np.full((TILE, TILE, 3), 90, dtype=np.uint8)
    mask = np.zeros((TILE, TILE), dtype=bool)
    mask[5:20, 7:26] = True
    mask[12:20, 7:15] = False                    # an L, as a polygon's mask
    view = describer.view(chip, (7, 5, 26, 20), mask)
    inputs = describer.family.model_inputs(describer.processor, [Image.fromarray(view.image)], ["<image>"])
    base = inputs["pixel_values"][0, 0].permute(1, 2, 0).numpy() * np.array(SIGLIP_STD) + np.array(SIGLIP_MEAN)
    red = (base[..., 0] > 0.95) & (base[..., 1] < 0.05) & (base[..., 2] < 0.05)
    edge = mask & ~(np.pad(mask, 1)[2:, 1:-1] & np.pad(mask, 1)[:-2, 1:-1] & np.pad(mask, 1)[1:-1, 2:]
                    & np.pad(mask, 1)[1:-1, :-2])
    assert np.array_equal(red, edge)
    rows, cols = np.nonzero(red)
    assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (7, 5, 26, 20)


def test_golden_round_trip_map_to_box_text_and_back(checkpoint, make_raster):
    """The text option: LLaVA-1.5's two-decimal 0..1 box. Its step is 1/100 of the chip side, so it is within
    half a chip pixel for chips up to 100 px (the tiny tile, chips the processor upsamples) and only within
    half a step (1.92 px at 384) on real 384-px chips: one reason the outline is the default."""
    directory, _ = checkpoint
    onevision = family("llava-onevision")
    to_model, from_model = box_codec(onevision, onevision.load_processor(directory), json.loads)

    scene_path, polygons = polygons_on_scene(make_raster)
    worst = map_round_trip(scene_path, polygons, "EPSG:4326", [TILE, 20, 64, 97], to_model, from_model)
    print(f"llava-onevision (box text) worst round-trip error: {worst:.4f} chip px")
    assert worst < 0.5
    worst_384 = map_round_trip(scene_path, polygons, "EPSG:4326", [384], to_model, from_model)
    print(f"llava-onevision (box text) worst round-trip error at 384 px: {worst_384:.4f} chip px")
    assert worst_384 <= 0.005 * 384 + 1e-6


# ------------------------------------------------------------------ d. describe writes rows
@pytest.mark.slow
@pytest.mark.parametrize("region_as", [[], ["--region-as", "text"]], ids=["outline", "text"])
def test_describe_writes_rows_from_llava_onevision(tmp_path, checkpoint, region_as):
    directory, _ = checkpoint
    describe_rows(tmp_path, directory, *region_as, max_new_tokens=4)
    # as in the real folders, the model's vocabulary is padded past the tokenizer's (the JSON constraint's mask
    # covers the padding)
    from transformers import AutoTokenizer

    assert checkpoint[1].config.text_config.vocab_size > len(AutoTokenizer.from_pretrained(directory))


# ------------------------------------------------------------------ e. the region reaches the model
@pytest.mark.parametrize("region_as, phrase", [(None, "the region outlined in red"),
                                               ("text", "the region [0.25, 0.12, 0.75, 0.88]")])
def test_region_reaches_the_model_outlined_or_as_box_text(checkpoint, monkeypatch, region_as, phrase):
    directory, _ = checkpoint
    chip, box = random_chip(TILE, TILE), (8.0, 4.0, 24.0, 28.0)
    describer = load(directory, max_new_tokens=2, region_as=region_as)
    seen: list[tuple] = []
    model_inputs = describer.family.model_inputs
    monkeypatch.setattr(describer.family, "model_inputs",
                        lambda p, images, texts: seen.append((images, texts)) or model_inputs(p, images, texts))
    describer.describe([chip], [box], [None])
    assert len(seen) == 2                       # the attribute question and the description question
    for images, texts in seen:
        assert phrase in texts[0] and texts[0].startswith("<|im_start|>user\n<image>\n")
        assert np.array_equal(np.asarray(images[0]), marks.outline(chip, box) if region_as is None else chip)
