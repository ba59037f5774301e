"""Florence-2 (mgimm_core/families/florence2.py): a tiny random checkpoint in transformers' native
on-disk format, written here (mgimm_core/model/testing_florence2.py), recognised, run and compared
with transformers' own Florence2ForConditionalGeneration and Florence2Processor.
"""

from __future__ import annotations

import re

import numpy as np
import pyproj
import pytest
import shapely
import torch
from click.testing import CliRunner
from tests.families.family_checks import check_chosen_logprobs, check_model_info, describe_rows, model_info
from PIL import Image

from batch.cli import cli
from mgimm_core.describer import load_describer
from mgimm_core.engines import LoadOptions
from mgimm_core.errors import ModelError
from mgimm_core.families import family
from mgimm_core.families.florence2 import Florence2Family
from mgimm_core.families.regions import CONVENTIONS, ModelSpace
from mgimm_core.model.testing_florence2 import write_florence2, write_florence2_remote_code
from mgimm_core.model.testing_mgimm import random_chip
from mgimm_core.regions import AOIFeature, ChipSettings, prepare_region
from mgimm_core.scene import Scene

FLORENCE = family("florence2")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_florence2(tmp_path_factory.mktemp("florence") / "Florence-2-tiny")


@pytest.fixture(scope="module")
def describer(checkpoint):
    return load_describer(checkpoint[0], options=LoadOptions(device="cpu", max_new_tokens=6))


# ------------------------------------------------------------------ a. model-info
def test_model_info_recognises_the_folder(checkpoint, tmp_path):
    directory, reference = checkpoint
    # the stored tensors: the parameters and the projector's sinusoidal table (a persistent buffer);
    # the input size is the processor's square side (768 in the released folders)
    table = reference.model.multi_modal_projector.visual_temporal_embed.pos_idx_to_embed
    found = check_model_info(directory, reference, "florence2", extra_tensors=table.numel(), kind="Florence-2",
                             region_convention="florence_bins", input_size=64, licence="MIT", non_commercial=False,
                             region_ways=["text", "crop"])
    assert "<loc_" in found["region_method"]
    # transformers 5's own save_pretrained layout (image processor inside processor_config.json) too
    v5, _ = write_florence2(tmp_path / "v5", hub_layout=False)
    assert not (v5 / "preprocessor_config.json").exists() and model_info(v5)["input_size"] == 64
    # the released processors squash every image to 768 x 768: chips of that side go in unresized
    released, _ = write_florence2(tmp_path / "side768", side=768)
    assert model_info(released)["input_size"] == 768


def test_a_remote_code_folder_is_recognised_and_loading_names_the_conversion(tmp_path):
    directory = write_florence2_remote_code(tmp_path / "Florence-2-base")
    found = model_info(directory)
    assert found["family"] == "florence2-remote-code" and found["licence"] == "MIT"
    with pytest.raises(ModelError, match="convert_florence2_original_pytorch_to_hf"):
        load_describer(directory, options=LoadOptions(device="cpu"))


def test_a_card_licence_other_than_mit_is_reported(checkpoint, tmp_path):
    directory, _ = write_florence2(tmp_path / "finetune")
    (directory / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n# a fine-tune\n")
    found = model_info(directory)
    assert found["licence"] == "cc-by-nc-4.0" and found["non_commercial"] and found["licence_warning"]
    # `license: other` names the licence in license_name (the one card reader, families/_folder.py)
    (directory / "README.md").write_text("---\nlicense: other\nlicense_name: falcon-research\n---\n# Falcon\n")
    found = model_info(directory)
    assert found["licence"] == "falcon-research" and found["non_commercial"]


# ------------------------------------------------------------------ b. logits
def _logits(model, inputs, decoder):
    with torch.no_grad():
        return model(**inputs, decoder_input_ids=decoder).logits


def test_logits_equal_transformers_florence2_on_inputs_its_processor_builds(checkpoint, describer):
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    directory, _ = checkpoint
    chip = random_chip(40, 52, seed=3)                      # (h, w): resized to 64 x 64 by the processor
    box = (5.0, 6.0, 30.0, 33.0)
    h, w = chip.shape[:2]
    # our path: the family's region text, question, prompt and inputs
    fam, processor = describer.family, describer.processor
    question = fam.description_question(fam.region_phrase("text", fam.region_text(processor, box, w, h)), None)
    ours_inputs = fam.model_inputs(processor, [Image.fromarray(chip)], [fam.chat_text(processor, question)])
    # transformers' path: its processor's own quantizer and task prompt
    their_processor = AutoProcessor.from_pretrained(directory)
    bins = their_processor.post_processor.quantize(torch.tensor([box]), (w, h))[0].tolist()
    prompt = "<REGION_TO_DESCRIPTION>" + "".join(f"<loc_{b}>" for b in bins)
    their_inputs = their_processor(text=prompt, images=Image.fromarray(chip), return_tensors="pt")
    assert torch.equal(ours_inputs["input_ids"], their_inputs["input_ids"])
    decoder = torch.tensor([[2, 0] + their_processor.tokenizer(" the red car", add_special_tokens=False)["input_ids"]])
    ours = _logits(describer.model, ours_inputs, decoder)
    theirs = _logits(Florence2ForConditionalGeneration.from_pretrained(directory).eval(), their_inputs, decoder)
    diff = (ours - theirs).abs().max().item()
    print(f"florence2 logits max abs diff {diff:.3g}")
    assert ours.shape == theirs.shape and diff < 1e-4
    # the region and the image really reach the model
    moved = fam.model_inputs(processor, [Image.fromarray(chip)], [fam.chat_text(processor, fam.description_question(
        fam.region_phrase("text", fam.region_text(processor, (20.0, 1.0, 50.0, 12.0), w, h)), None))])
    assert (_logits(describer.model, moved, decoder) - ours).abs().max().item() > 1e-5
    other = fam.model_inputs(processor, [Image.fromarray(random_chip(40, 52, seed=9))], [fam.chat_text(processor,
                                                                                                       question)])
    assert (_logits(describer.model, other, decoder) - ours).abs().max().item() > 1e-5


# ------------------------------------------------------------------ c. golden round trip
def test_bins_match_the_processors_own_quantizer_and_dequantizer(describer):
    quantizer = describer.processor.post_processor
    convention = CONVENTIONS["florence_bins"]
    rng = np.random.default_rng(11)
    for w, h in [(97, 131), (500, 375), (768, 768), (1000, 600), (64, 64)]:
        for _ in range(200):
            x, y = np.sort(rng.uniform(0, w, 2)), np.sort(rng.uniform(0, h, 2))
            box = (float(x[0]), float(y[0]), float(x[1]), float(y[1]))
            ours = convention.encode(box, w, h)
            theirs = quantizer.quantize(torch.tensor([box], dtype=torch.float64), (w, h))[0].tolist()
            assert list(ours) == theirs, (w, h, box)
            back = quantizer.dequantize(torch.tensor([theirs], dtype=torch.float64), (w, h))[0].tolist()
            # the same bin centres; transformers' native dequantizer truncates them to whole pixels
            # (Microsoft's original Florence-2 code, like ours, keeps the centre)
            assert [int(v) for v in convention.decode(ours, w, h)] == back


def _feature(geometry, fid):
    return AOIFeature(fid, geometry, pyproj.CRS("EPSG:32633"), {})


def _round_trip_error(fam, processor, t, polygon, box, window, out_shape) -> float:
    """Worst error, in chip pixels, of the polygon's bounds after chip box -> <loc_N> -> chip -> map."""
    (c0, r0, wc, hc), (oh, ow) = window, out_shape
    assert fam.model_space(processor, ow, oh) == ModelSpace(64, 64)      # the processor resizes every chip
    text = fam.region_text(processor, box, ow, oh)
    back = CONVENTIONS["florence_bins"].decode([int(v) for v in re.findall(r"<loc_(\d+)>", text)], ow, oh)
    sx, sy = wc / ow, hc / oh
    corners = [t @ (c0 + back[0] * sx, r0 + back[1] * sy), t @ (c0 + back[2] * sx, r0 + back[3] * sy)]
    xs, ys = sorted(c[0] for c in corners), sorted(c[1] for c in corners)
    minx, miny, maxx, maxy = polygon.bounds
    px, py = abs(t.a) * sx, abs(t.e) * sy                # one chip pixel in map units
    return max(abs(xs[0] - minx) / px, abs(xs[1] - maxx) / px, abs(ys[0] - miny) / py, abs(ys[1] - maxy) / py)


def test_map_polygon_round_trips_through_the_location_tokens(make_raster, describer):
    """map polygon -> chip box -> <loc_N> bins of the 64 x 64 image the model sees -> chip pixels -> map,
    within half a chip pixel: the geo core's chips (square, at the scene edge, read downsampled to 768)
    and non-square chips (131 x 97, 300 x 40 windows), all resized by the processor."""
    fam, processor = describer.family, describer.processor
    settings = ChipSettings(input_size=768, context=0.25, min_window=48)
    rings = {"middle": [(700.3, 400.2), (760.9, 410.7), (741.2, 470.1)],
             "edge": [(3.4, 300.6), (40.2, 310.3), (20.7, 345.9)],
             "corner": [(1480.2, 895.1), (1497.6, 895.1), (1497.6, 870.3), (1480.2, 870.3)],
             "large": [(100.5, 100.5), (1100.2, 150.7), (900.9, 780.3)]}
    worst, shapes = 0.0, set()
    with Scene.open(make_raster(width=1500, height=900, res=2.0)) as scene:
        t = scene.transform
        for fid, ring in rings.items():
            polygon = shapely.Polygon([t @ xy for xy in ring])
            chip = prepare_region(scene, _feature(polygon, fid), settings)
            w = chip.window
            shapes.add(chip.out_shape)
            worst = max(worst, _round_trip_error(fam, processor, t, polygon, chip.box,
                                                 (w.col_off, w.row_off, w.width, w.height), chip.out_shape))
        # non-square chips: a window of the scene read as is, the polygon's box in its pixels
        inverse = ~t
        for window, ring in [((600, 380, 131, 97), [(610.2, 390.7), (700.9, 400.1), (690.3, 470.6)]),
                             ((50, 20, 300, 40), [(60.5, 22.1), (340.4, 30.8), (200.2, 58.9)])]:
            polygon = shapely.Polygon([t @ xy for xy in ring])
            cols, rows = zip(*(inverse @ xy for xy in polygon.exterior.coords))
            box = (min(cols) - window[0], min(rows) - window[1], max(cols) - window[0], max(rows) - window[1])
            shapes.add((window[3], window[2]))
            worst = max(worst, _round_trip_error(fam, processor, t, polygon, box, window, (window[3], window[2])))
    print(f"florence2 worst round-trip error {worst:.4f} chip px over chips (h, w) {sorted(shapes)}")
    assert (768, 768) in shapes and (97, 131) in shapes and (40, 300) in shapes
    assert worst < 0.5


# ------------------------------------------------------------------ d. describe
@pytest.mark.slow
def test_describe_writes_rows_from_florence2(tmp_path, checkpoint, monkeypatch):
    questions: list[str] = []
    original = Florence2Family.chat_text

    def spy(self, processor, question):
        questions.append(question)
        return original(self, processor, question)

    monkeypatch.setattr(Florence2Family, "chat_text", spy)
    describe_rows(tmp_path, checkpoint[0], max_new_tokens=5, objects=3)
    # each region went as four location tokens after the two task tokens
    assert sum(q.startswith("<REGION_TO_CATEGORY><loc_") for q in questions) == 4
    assert sum(q.startswith("<REGION_TO_DESCRIPTION><loc_") for q in questions) == 4
    assert all(q.count("<loc_") == 4 for q in questions)


def test_answers_keep_the_probability_each_token_was_chosen_with(describer):
    """An encoder-decoder: generate's output starts with the decoder's start token, which has no score."""
    check_chosen_logprobs(describer, random_chip(64, 80, seed=4), (6.0, 8.0, 50.0, 60.0), json_form=False)


def test_an_empty_category_answer_is_an_invalid_answer_row():
    fam = FLORENCE
    assert fam.parse_attributes(" storage tank ") == {"name": "storage tank"}
    from mgimm_core.errors import InvalidAnswerError

    with pytest.raises(InvalidAnswerError):
        fam.parse_attributes("  ")


# ------------------------------------------------------------------ e. the region reaches the model
def test_the_region_reaches_the_processor_as_location_tokens(describer, monkeypatch):
    seen: list[str] = []
    original = describer.processor.__class__.__call__

    def spy(processor, *args, **kwargs):
        seen.extend(kwargs["text"])
        return original(processor, *args, **kwargs)

    monkeypatch.setattr(describer.processor.__class__, "__call__", spy)
    chip = random_chip(60, 100, seed=4)                       # (h, w)
    [result] = describer.describe([chip], [(10.0, 20.0, 50.0, 40.0)], [None])
    # 10/100, 20/60, 50/100, 40/60 of 1000 bins, floored
    assert seen == ["<REGION_TO_CATEGORY><loc_100><loc_333><loc_500><loc_666>",
                    "<REGION_TO_DESCRIPTION><loc_100><loc_333><loc_500><loc_666>"]
    # the processor expands the task token into the sentence Florence-2 was trained on
    ids = describer.processor(images=[Image.fromarray(chip)], text=seen[:1], return_tensors="pt")["input_ids"][0]
    assert describer.processor.tokenizer.decode(ids).endswith(
        "<s>What is the region <loc_100><loc_333><loc_500><loc_666>?</s>")
    assert result.description and result.attributes.get("name")


def test_crop_asks_about_the_whole_cropped_chip(checkpoint):
    describer = load_describer(checkpoint[0], options=LoadOptions(device="cpu", max_new_tokens=3, region_as="crop"))
    view = describer.view(random_chip(60, 100, seed=4), (10.0, 20.0, 50.0, 40.0), None)
    assert view.image.shape[:2] == (28, 48)          # the 40 x 20 box and 4 px around it
    assert FLORENCE.attribute_question(view.region) == "<REGION_TO_CATEGORY><loc_0><loc_0><loc_999><loc_999>"
    with pytest.raises(Exception, match="region as 'outline'"):
        load_describer(checkpoint[0], options=LoadOptions(device="cpu", region_as="outline"))


def test_a_user_prompt_keeps_florence_task_tokens():
    region = "<loc_1><loc_2><loc_3><loc_4>"
    assert FLORENCE.description_question(region, None) == "<REGION_TO_DESCRIPTION>" + region
    assert FLORENCE.description_question(region, "<REGION_TO_OCR>") == "<REGION_TO_OCR>" + region
    assert FLORENCE.description_question(region, "What is in {region}?") == f"What is in {region}?"
    assert FLORENCE.description_question(region, "<MORE_DETAILED_CAPTION>") == "<MORE_DETAILED_CAPTION>"


def test_a_damaged_preprocessor_file_is_a_model_error_naming_it(tmp_path):
    directory, _ = write_florence2(tmp_path / "damaged")
    (directory / "preprocessor_config.json").write_text("[1, 2]")
    result = CliRunner().invoke(cli, ["model-info", str(directory)])
    assert result.exit_code == 1 and "preprocessor_config.json" in result.output and "Traceback" not in result.output
