"""Qwen2.5-VL and Qwen3-VL (mgimm_core/families/qwen.py) on tiny random folders in the Hub's layout.

The folders are written by the tests (mgimm_core/model/testing_qwen.py); the yardstick is
transformers' own class loaded from the folder, given inputs built here by hand: the tokenizer, the
image processor and Qwen's chat format written out, with one <|image_pad|> per merged patch and
the image tokens marked (mm_token_type_ids, which the models need for their 3-D positions).
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import shapely
import torch
from tests.families.family_checks import check_chosen_logprobs, check_model_info, describe_rows
from PIL import Image

from mgimm_core.describer import load_describer
from mgimm_core.engines import LoadOptions
from mgimm_core.errors import ModelError
from mgimm_core.families import family
from mgimm_core.model.testing_mgimm import random_chip
from mgimm_core.model.testing_qwen import write_qwen3_vl, write_qwen25_vl
from mgimm_core.model_dir import ModelDirectory
from mgimm_core.model_formats import ModelKind
from mgimm_core.regions import AOIFeature, ChipSettings, place_region
from mgimm_core.scene import Scene

WRITERS = {"qwen2.5-vl": write_qwen25_vl, "qwen3-vl": write_qwen3_vl}
CLASSES = {"qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration", "qwen3-vl": "Qwen3VLForConditionalGeneration"}
# A 75 x 61 chip (neither side a multiple of 28 or 32) and a region on it, in chip pixels.
CHIP, BOX = (61, 75), (5.0, 6.0, 40.0, 50.0)
# The chip grown to whole merged patches (28 px for Qwen2.5-VL, 32 px for Qwen3-VL), width x height.
GROWN = {"qwen2.5-vl": (84, 84), "qwen3-vl": (96, 64)}
# The region as each family must read it, worked out by hand:
#   Qwen2.5-VL: pixels of the 84 x 84 image it sees; x * 84/75, y * 84/61, rounded
#   Qwen3-VL:   0..1000 of the image; x * 1000/75, y * 1000/61, rounded
BOX_TEXT = {"qwen2.5-vl": '{"bbox_2d": [6, 8, 45, 69]}', "qwen3-vl": '{"bbox_2d": [67, 98, 533, 820]}'}
SYSTEM = {"qwen2.5-vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n", "qwen3-vl": ""}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qwen")
    return {name: write(tmp / name) for name, write in WRITERS.items()}


@pytest.fixture(scope="module")
def describers(folders):
    return {name: load_describer(folders[name][0], options=LoadOptions(device="cpu", max_new_tokens=6))
            for name in WRITERS}


# ------------------------------------------------------------------ a. model-info
@pytest.mark.parametrize("name", list(WRITERS))
def test_model_info_recognises_the_folder(folders, name):
    directory, reference = folders[name]
    # the default chip: 16 x 16 merged patches, a size the processor leaves as it is
    info = check_model_info(directory, reference, name, region_as="text", source=CLASSES[name],
                            region_convention={"qwen2.5-vl": "qwen_pixels", "qwen3-vl": "qwen_1000"}[name],
                            input_size={"qwen2.5-vl": 448, "qwen3-vl": 512}[name])
    assert "bbox_2d" in info["region_method"]


def test_default_chip_is_passed_through_unresized(describers):
    for name, describer in describers.items():
        side = ModelDirectory.resolve(describer.model_dir).chip.input_size
        space = describer.family.model_space(describer.processor, side, side)
        assert (space.width, space.height) == (side, side), name


def test_chip_size_stays_inside_the_folders_pixel_limits(tmp_path):
    directory, _ = write_qwen25_vl(tmp_path / "small", max_pixels=200 * 200)
    assert ModelDirectory.resolve(directory).chip.input_size == 196          # 7 x 28, 196^2 <= 200^2


def test_a_folder_saved_by_transformers_5_loads_with_its_settings(tmp_path):
    """save_pretrained writes processor_config.json (the image processor nested) and chat_template.jinja."""
    hub, _ = write_qwen25_vl(tmp_path / "hub", max_pixels=200 * 200)
    qwen25 = family("qwen2.5-vl")
    saved = tmp_path / "saved"
    qwen25.load_processor(hub).save_pretrained(saved)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(hub / name, saved / name)
    assert not (saved / "preprocessor_config.json").exists() and (saved / "processor_config.json").exists()
    assert ModelDirectory.resolve(saved).chip.input_size == 196
    processor = qwen25.load_processor(saved)
    assert processor.image_processor.size["longest_edge"] == 200 * 200 and "<|im_start|>" in processor.chat_template


def _kind(name, config, path):
    return ModelKind(family(name), config, path)


def test_licence_from_the_folder_then_from_the_size(tmp_path):
    qwen25 = family("qwen2.5-vl")
    three_b = _kind("qwen2.5-vl", {"model_type": "qwen2_5_vl", "text_config": {"hidden_size": 2048}}, tmp_path)
    assert qwen25.licence(three_b).non_commercial and "Research" in qwen25.licence(three_b).name
    assert "non-commercial" in qwen25.licence(three_b).warning("Qwen2.5-VL-3B-Instruct")
    seven_b = _kind("qwen2.5-vl", {"model_type": "qwen2_5_vl", "hidden_size": 3584}, tmp_path)   # older layout
    assert qwen25.licence(seven_b).name == "Apache-2.0" and not qwen25.licence(seven_b).non_commercial
    # the folder's own files win over the size (a fine-tune's card or LICENSE)
    (tmp_path / "README.md").write_text("---\nlicense: other\nlicense_name: qwen-research\n---\n# card\n")
    assert qwen25.licence(seven_b).non_commercial
    (tmp_path / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n# a fine-tune's card\n")
    assert qwen25.licence(seven_b).name == "cc-by-nc-4.0" and qwen25.licence(seven_b).non_commercial
    (tmp_path / "LICENSE").write_text("                                 Apache License\n Version 2.0, January 2004")
    assert qwen25.licence(three_b).name == "Apache-2.0"
    qwen3 = family("qwen3-vl")
    assert qwen3.licence(_kind("qwen3-vl", {}, tmp_path / "none")).name == "Apache-2.0"


def test_a_describeearth_folder_is_refused_with_the_reason(tmp_path, folders):
    directory = tmp_path / "describeearth"
    shutil.copytree(folders["qwen2.5-vl"][0], directory)
    config = json.loads((directory / "config.json").read_text())
    config["architectures"] = ["DescribeEarthForConditionalGeneration"]
    (directory / "config.json").write_text(json.dumps(config))
    assert ModelDirectory.resolve(directory).family.name == "qwen2.5-vl"
    with pytest.raises(ModelError, match="DescribeEarthForConditionalGeneration.*own code"):
        load_describer(directory, options=LoadOptions(device="cpu"))


# ------------------------------------------------------------------ b. logits
def reference_inputs(directory, name, chip, question):
    """The model's inputs built without the family: tokenizer, image processor, Qwen's chat format."""
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    settings = json.loads((directory / "preprocessor_config.json").read_text())
    settings.pop("image_processor_type"), settings.pop("processor_class")
    grown = Image.fromarray(chip).resize(GROWN[name], resample=Image.Resampling.BICUBIC)
    images = Qwen2VLImageProcessorPil(**settings)(images=[grown], return_tensors="pt")
    pads = int(images["image_grid_thw"][0].prod()) // settings["merge_size"] ** 2
    prompt = (f"{SYSTEM[name]}<|im_start|>user\n<|vision_start|>{'<|image_pad|>' * pads}<|vision_end|>{question}"
              f"<|im_end|>\n<|im_start|>assistant\n")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokens = tokenizer(prompt, return_tensors="pt")
    # modality per token (0 text, 1 image): without it transformers' Qwen models fall back to 1-D positions
    image = tokens["input_ids"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return {**tokens, **images, "mm_token_type_ids": image.long()}


def our_logits(describer, chip, box):
    family_, processor = describer.family, describer.processor
    view = describer.view(chip, box, None)
    question = family_.description_question(view.region, None)
    inputs = family_.model_inputs(processor, [Image.fromarray(view.image)],
                                  [family_.chat_text(processor, question)])
    with torch.no_grad():
        return describer.model(**inputs).logits, question


@pytest.mark.parametrize("name", list(WRITERS))
def test_logits_equal_transformers_own_class(folders, describers, name):
    import transformers

    directory, _ = folders[name]
    if name == "qwen2.5-vl":          # the Hub folders' stale name, which transformers 5 does not know
        assert json.loads((directory / "preprocessor_config.json").read_text())["image_processor_type"] == \
            "Qwen2_5_VLImageProcessor"
    chip = random_chip(*CHIP, seed=3)
    ours, question = our_logits(describers[name], chip, BOX)
    assert BOX_TEXT[name] in question
    theirs_model = getattr(transformers, CLASSES[name]).from_pretrained(directory).eval()
    with torch.no_grad():
        theirs = theirs_model(**reference_inputs(directory, name, chip, question)).logits
    assert ours.shape == theirs.shape and ours.dtype == torch.float32
    diff = (ours - theirs).abs().max().item()
    print(f"{name}: logits max abs diff {diff:.3g}")
    assert diff < 1e-4
    # the image reaches the model: another chip changes the logits
    moved, _ = our_logits(describers[name], random_chip(*CHIP, seed=9), BOX)
    assert (moved - ours).abs().max().item() > 1e-3


@pytest.mark.parametrize("json_form", [False, True])
@pytest.mark.parametrize("name", list(WRITERS))
def test_answers_keep_the_probability_each_token_was_chosen_with(describers, name, json_form):
    check_chosen_logprobs(describers[name], random_chip(*CHIP, seed=3), BOX, json_form)


@pytest.mark.parametrize("name", list(WRITERS))
def test_a_batch_of_chips_of_other_sizes_gives_each_its_own_logits(describers, name):
    """Left padding and the 3-D positions of a batch: each row's next-token logits as alone."""
    describer = describers[name]
    family_, processor = describer.family, describer.processor
    chips, boxes = [random_chip(61, 75, seed=1), random_chip(120, 90, seed=2)], [BOX, (10, 10, 80, 100)]
    texts = [family_.chat_text(processor, family_.description_question(describer.view(c, b, None).region, None))
             for c, b in zip(chips, boxes)]
    images = [Image.fromarray(c) for c in chips]
    with torch.no_grad():
        batch = describer.model(**family_.model_inputs(processor, images, texts)).logits[:, -1]
        for row, (image, text) in enumerate(zip(images, texts)):
            alone = describer.model(**family_.model_inputs(processor, [image], [text])).logits[:, -1]
            assert (batch[row] - alone[0]).abs().max().item() < 1e-4, (name, row)


# ------------------------------------------------------------------ c. golden round trip
# Region extents in scene pixels (x, y): windows of 48 (the minimum), 61, 97, 131 and 201 px, and a
# 600-px window read decimated to the chip size; none of them a multiple of 28 or 32.
EXTENTS = [(9.3, 20.7), (40.2, 23.9), (64.1, 50.5), (87.0, 33.3), (133.6, 120.2), (399.5, 250.25)]


def chip_to_map(placement, scene_transform, x, y, row_cut=0):
    """Chip pixel -> map coordinates through the placement's window (and a cut of its first rows)."""
    scale = placement.scale
    col = placement.window.col_off + x * scale
    row = placement.window.row_off + (y + row_cut) * scale
    return scene_transform @ (col, row)


@pytest.mark.parametrize("name", list(WRITERS))
def test_map_polygon_round_trips_through_the_models_box(make_raster, describers, name):
    """map polygon -> chip box (geo core) -> the model's numbers (in its resized image) -> chip box ->
    map, for square chips and non-square cuts of them that the processor resizes."""
    describer = describers[name]
    family_, processor = describer.family, describer.processor
    convention = family_.region_convention()
    side = ModelDirectory.resolve(describer.model_dir).chip.input_size
    path = make_raster(width=900, height=700, res=2.0)
    scene = Scene.open(path)
    t = scene.transform
    worst_chip_px, resized = 0.0, 0
    for i, (ex, ey) in enumerate(EXTENTS):
        x0, y0 = 150.37 + 7 * i, 120.61 + 5 * i
        corners = [t @ (x0, y0), t @ (x0 + ex, y0), t @ (x0 + ex, y0 + ey), t @ (x0, y0 + ey)]
        polygon = shapely.Polygon(corners)
        placement = place_region(scene, AOIFeature(id=str(i), geometry=polygon, crs=scene.crs, properties={}),
                                 ChipSettings(input_size=side, context=0.25, min_window=48))
        h, w = placement.out_shape
        x1, y1, x2, y2 = placement.box
        cut = max(0, math.floor(y1) - 3)             # a non-square chip: its first rows cut off
        for chip_w, chip_h, box, row_cut in ((w, h, placement.box, 0), (w, h - cut, (x1, y1 - cut, x2, y2 - cut), cut)):
            space = family_.model_space(processor, chip_w, chip_h)
            image = family_.whole_patches(processor, Image.fromarray(random_chip(chip_h, chip_w)))
            grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
            patch = processor.image_processor.patch_size
            assert (space.height, space.width) == (int(grid[1]) * patch, int(grid[2]) * patch)   # the processor's
            resized += (space.width, space.height) != (chip_w, chip_h)
            values = convention.encode(box, chip_w, chip_h, space)
            back = convention.decode(values, chip_w, chip_h, space)
            (bx1, by1), (bx2, by2) = (chip_to_map(placement, t, back[0], back[1], row_cut),
                                      chip_to_map(placement, t, back[2], back[3], row_cut))
            minx, miny, maxx, maxy = polygon.bounds
            map_error = max(abs(bx1 - minx), abs(bx2 - maxx), abs(by1 - maxy), abs(by2 - miny))
            chip_px = map_error / (abs(t.a) * placement.scale)
            # the convention's own step, in chip pixels: one pixel of the resized image, or 1/1000
            step = (max(chip_w / space.width, chip_h / space.height) if convention.scale is None
                    else max(chip_w, chip_h) / convention.scale)
            assert step <= 1                    # the model's image is never coarser than the chip
            assert chip_px <= 0.5 * step + 1e-6, (name, i, chip_w, chip_h, chip_px, step)
            worst_chip_px = max(worst_chip_px, chip_px)
    print(f"{name}: worst round-trip error {worst_chip_px:.3f} chip px")
    assert resized >= 6          # most chips here are resized by the processor


# ------------------------------------------------------------------ e. the region reaches the model
@pytest.mark.parametrize("name", list(WRITERS))
def test_the_prompt_holds_the_box_in_the_familys_convention(describers, name, monkeypatch):
    describer = describers[name]
    seen = []
    original = describer.family.chat_text

    def spy(processor, question):
        text = original(processor, question)
        seen.append(text)
        return text

    monkeypatch.setattr(describer.family, "chat_text", spy)
    texts = describer.describe([random_chip(*CHIP)], [BOX], [None])
    assert len(seen) == 2 and all(BOX_TEXT[name] in text for text in seen)        # attributes, description
    assert all(text.count("<|image_pad|>") == 1 for text in seen)                  # one image, expanded later
    assert texts[0].description is not None


@pytest.mark.parametrize("name", list(WRITERS))
def test_an_outline_instead_of_the_box(folders, name, monkeypatch):
    """--region-as outline: the region drawn on the chip, the question naming it, no box text."""
    describer = load_describer(folders[name][0], options=LoadOptions(device="cpu", max_new_tokens=2,
                                                                     region_as="outline"))
    seen = []
    monkeypatch.setattr(describer.family, "model_inputs", lambda processor, images, texts: seen.append(
        (images, texts)) or type(describer.family).model_inputs(describer.family, processor, images, texts))
    describer.describe([random_chip(*CHIP)], [BOX], [None], attributes=False)
    (images, texts), = seen
    assert "outlined in red" in texts[0] and "bbox_2d" not in texts[0]
    red = np.all(np.asarray(images[0]) == (255, 0, 0), axis=2)
    assert red[6, 5:40].all() and not red[20:40, 15:30].any()


# ------------------------------------------------------------------ d. describe
@pytest.mark.parametrize("name", list(WRITERS))
def test_describe_writes_rows_from_the_family(tmp_path, folders, name):
    describe_rows(tmp_path, folders[name][0], max_new_tokens=8)
