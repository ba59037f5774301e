"""InternVL 2.5/3 (-hf) through the family registry, on a tiny random checkpoint in the real on-disk format
written by mgimm_core/model/testing_internvl.py; the yardstick is transformers' own
InternVLForConditionalGeneration and InternVLProcessor. InternVL chat-code folders are refused."""

from __future__ import annotations

import re

import pytest
import torch
from click.testing import CliRunner
from tests.families.family_checks import (box_codec, check_model_info, describe_rows, map_round_trip, model_info, polygons_on_scene,
                           transformers_logits)
from PIL import Image

from batch.cli import cli
from mgimm_core.errors import ModelError
from mgimm_core.families import family
from mgimm_core.model.testing_internvl import write_internvl, write_internvl_chat
from mgimm_core.model.testing_mgimm import random_chip

TILE = 56       # the tiny checkpoint's tile (448 in the real ones)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_internvl(tmp_path_factory.mktemp("internvl") / "InternVL3-tiny-hf")


def our_logits(directory, chip, box, question_for):
    """Logits of the folder as the registry loads it, on inputs built by the family's own path."""
    from mgimm_core.describer import load_describer
    from mgimm_core.engines import LoadOptions

    describer = load_describer(directory, options=LoadOptions(device="cpu"))
    view = describer.view(chip, box, None)
    question = question_for(view.region)
    text = describer.family.chat_text(describer.processor, question)
    inputs = describer.family.model_inputs(describer.processor, [Image.fromarray(view.image)], [text])
    with torch.no_grad():
        return describer.model(**inputs).logits, inputs, describer


# ------------------------------------------------------------------ a. model-info
def test_model_info_recognises_the_folder(checkpoint):
    directory, reference = checkpoint
    # the input size: one tile of the image processor
    info = check_model_info(directory, reference, "internvl", region_convention="internvl_1000", input_size=TILE,
                            region_as="text")
    assert "<box>[[" in info["region_method"]
    assert "MIT" in info["licence"] and not info["non_commercial"]


def test_licence_is_read_from_the_model_card(tmp_path, checkpoint):
    import shutil

    directory = tmp_path / "carded"
    shutil.copytree(checkpoint[0], directory)
    (directory / "README.md").write_text("---\nlicense: other\nlicense_name: qwen\npipeline_tag: image-text-to-text\n"
                                         "---\n# InternVL3-78B\n")
    assert model_info(directory)["licence"] == "qwen"


# ------------------------------------------------------------------ b. logits equal transformers' own
@pytest.mark.parametrize("size", [(TILE, TILE), (40, 40), (97, 131)])
def test_logits_equal_transformers_internvl(checkpoint, size):
    """Our path (registry load, family.chat_text + model_inputs, region in the convention) against
    InternVLForConditionalGeneration.from_pretrained on inputs the processor's own chat API builds, with
    the box written by hand: same tokens, same pixels, same logits (fp32)."""
    from transformers import InternVLForConditionalGeneration, InternVLProcessor

    directory, _ = checkpoint
    h, w = size
    chip = random_chip(h, w, seed=3)
    box = (0.2 * w, 0.3 * h, 0.7 * w, 0.9 * h)
    ours, our_inputs, describer = our_logits(directory, chip, box, lambda region: f"What is {region}?")
    by_hand = [round(v * 1000) for v in (0.2, 0.3, 0.7, 0.9)]
    question = f"What is the <ref>region</ref><box>[[{', '.join(map(str, by_hand))}]]</box>?"
    theirs, theirs_inputs = transformers_logits(directory, InternVLProcessor, InternVLForConditionalGeneration, chip,
                                               question)
    assert torch.equal(our_inputs["input_ids"], theirs_inputs["input_ids"])
    diff = (ours - theirs).abs().max().item()
    print(f"internvl logits max abs diff {size}: {diff:.3g}")
    assert diff < 1e-4
    tiles = our_inputs["pixel_values"].shape[0]
    space = describer.family.model_space(describer.processor, w, h)
    grid = (space.width // TILE) * (space.height // TILE)
    assert tiles == (grid + 1 if grid > 1 else 1)       # the model space is the processor's real tiling
    if size == (TILE, TILE):
        assert tiles == 1                               # the default chip is one tile
    # the image reaches the model: another chip moves the logits
    moved, _, _ = our_logits(directory, random_chip(h, w, seed=9), box, lambda region: f"What is {region}?")
    assert (moved - ours).abs().max().item() > 1e-3


# ------------------------------------------------------------------ c. golden round trip
def test_golden_round_trip_map_to_internvl_box_and_back(checkpoint, make_raster):
    """Chips the processor resizes (smaller than the tile: upsampled; 97 px > 56: two-tile grids are not
    possible for square chips, so the non-square chips are checked on the convention below)."""
    directory, _ = checkpoint
    internvl = family("internvl")
    processor = internvl.load_processor(directory)

    def numbers(text):
        match = re.fullmatch(r"<box>\[\[(\d+), (\d+), (\d+), (\d+)\]\]</box>", text)
        assert match, text
        return [int(v) for v in match.groups()]

    to_model, from_model = box_codec(internvl, processor, numbers)

    scene_path, polygons = polygons_on_scene(make_raster)
    worst = map_round_trip(scene_path, polygons, "EPSG:4326", [TILE, 30, 97, 448], to_model, from_model)
    print(f"internvl worst round-trip error: {worst:.4f} chip px")
    assert worst < 0.5
    # non-square chips (crops): tiled to a grid of another aspect, the 0..1000 box is still the chip's
    for w, h in [(131, 97), (60, 200), (448, 300)]:
        space = internvl.model_space(processor, w, h)
        box = (0.13 * w, 0.41 * h, 0.77 * w, 0.93 * h)
        back = from_model(to_model(box, w, h), w, h)
        assert max(abs(a - b) for a, b in zip(back, box)) <= 0.5 * max(w, h) / 1000 + 1e-9
        assert (space.width, space.height) != (w, h)


# ------------------------------------------------------------------ d. describe writes rows
@pytest.mark.slow
def test_describe_writes_rows_from_internvl(tmp_path, checkpoint):
    describe_rows(tmp_path, checkpoint[0], max_new_tokens=4)


# ------------------------------------------------------------------ e. the region reaches the model
def test_region_reaches_the_model_as_ref_and_box_text(checkpoint, monkeypatch):
    from mgimm_core.describer import load_describer
    from mgimm_core.engines import LoadOptions

    directory, _ = checkpoint
    describer = load_describer(directory, options=LoadOptions(device="cpu", max_new_tokens=2))
    seen: list[str] = []
    chat_text = describer.family.chat_text
    monkeypatch.setattr(describer.family, "chat_text", lambda p, q: seen.append(chat_text(p, q)) or seen[-1])
    describer.describe([random_chip(TILE, TILE)], [(14.0, 7.0, 42.0, 49.0)], [None])
    box = "<ref>region</ref><box>[[250, 125, 750, 875]]</box>"
    assert len(seen) == 2 and all(box in text for text in seen)
    assert seen[0].startswith("<|im_start|>user\n<IMG_CONTEXT>\n") and seen[0].endswith("<|im_start|>assistant\n")
    ids = describer.processor.tokenizer.encode(seen[0])
    assert describer.processor.tokenizer.convert_tokens_to_ids("<box>") in ids     # InternVL's own box token


# ------------------------------------------------------------------ chat-code folders
def test_internvl_chat_folder_is_refused_with_the_conversion(tmp_path):
    from mgimm_core.describer import load_describer

    directory = write_internvl_chat(tmp_path / "EarthDial_4B_RGB")
    result = CliRunner().invoke(cli, ["model-info", str(directory)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "internvl_chat" in result.output and "convert_internvl_weights_to_hf" in result.output
    assert "Phi3ForCausalLM" in result.output
    with pytest.raises(ModelError, match="-hf release"):
        load_describer(directory)
