"""The family registry (mgimm_core/families): discovery, detection, region conventions, marks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mgimm_core.errors import ModelError, OptionsError
from mgimm_core.families import all_families, detect, family
from mgimm_core.families import marks
from mgimm_core.families.regions import CONVENTIONS, ModelSpace

ROOT = Path(__file__).resolve().parents[2]


def test_registry_finds_every_family_module_once():
    names = [f.name for f in all_families()]
    assert len(names) == len(set(names))
    assert {"mgimm", "llava-hf", "llava-original", "geochat"} <= set(names)
    for f in all_families():
        assert f.title and (f.convention is None or f.convention in CONVENTIONS)
        assert f.region_as in f.region_ways()


def test_detect_names_the_known_families_when_it_cannot_tell(tmp_path):
    with pytest.raises(ModelError) as caught:
        detect({"model_type": "bert"}, tmp_path)
    assert "'bert'" in str(caught.value) and "GeoChat" in str(caught.value)
    with pytest.raises(ModelError):
        family("no-such-family")


def test_demo_model_is_mgimm_with_region_tokens():
    from mgimm_core.model_dir import ModelDirectory

    model = ModelDirectory.resolve()
    assert model.family is family("mgimm") and model.family.region_method(model.kind) == "region tokens"


def test_region_as_is_checked_against_the_family():
    mgimm = family("mgimm")
    assert mgimm.check_region_as(None) == "tokens"
    with pytest.raises(OptionsError) as caught:
        mgimm.check_region_as("outline")
    assert caught.value.option == "region_as"


def test_no_module_outside_the_registry_tests_a_family_name():
    """The family decision lives in mgimm_core/families only (issue: one registry)."""
    names = "|".join(re.escape(f.name) for f in all_families())
    pattern = re.compile(rf"""(==|!=|\bin\b)\s*\(?\s*["']({names})["']|\.format\s*(==|!=|in\b)""")
    offenders = []
    for folder in ("mgimm_core", "batch", "qgis_plugin"):
        for path in (ROOT / folder).rglob("*.py"):
            if "families" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


# ------------------------------------------------------------------ conventions
@pytest.mark.parametrize("name", sorted(CONVENTIONS))
@pytest.mark.parametrize("chip", [(336, 336), (500, 375), (97, 131)])
def test_each_convention_round_trips_within_its_quantum(name, chip):
    """chip box -> the model's numbers -> chip box again, within half the convention's step."""
    convention = CONVENTIONS[name]
    w, h = chip
    space = ModelSpace(28 * round(w / 28), 28 * round(h / 28))
    rng = np.random.default_rng(7)
    for _ in range(50):
        x = np.sort(rng.uniform(0, w, 2))
        y = np.sort(rng.uniform(0, h, 2))
        box = (x[0], y[0], x[1], y[1])
        back = convention.decode(convention.encode(box, w, h, space), w, h, space)
        if convention.scale is None:
            step = (w / space.width, h / space.height)
        elif convention.rounding == "decimals2":
            step = (w / 100, h / 100)
        else:
            step = (w / convention.scale, h / convention.scale)
        limit = np.array([step[0], step[1], step[0], step[1]]) * (1.0 if convention.bins else 0.5) + 1e-9
        assert np.all(np.abs(np.subtract(back, box)) <= limit), (name, box, back)


def test_convention_texts_are_the_families_own():
    box, w, h = (50, 100, 150, 300), 500, 400
    assert CONVENTIONS["geochat_0_100"].write(box, w, h) == "{<10><25><30><75>|0}"
    assert CONVENTIONS["unit_box"].write(box, w, h) == "[0.10, 0.25, 0.30, 0.75]"
    assert json.loads(CONVENTIONS["qwen_pixels"].write(box, w, h, ModelSpace(504, 392))) == \
        {"bbox_2d": [50, 98, 151, 294]}
    assert json.loads(CONVENTIONS["qwen_1000"].write(box, w, h)) == {"bbox_2d": [100, 250, 300, 750]}
    assert CONVENTIONS["internvl_1000"].write(box, w, h) == "<box>[[100, 250, 300, 750]]</box>"
    assert CONVENTIONS["florence_bins"].write(box, w, h) == "<loc_100><loc_250><loc_300><loc_750>"


# ------------------------------------------------------------------ marks
def test_outline_draws_the_polygon_edge_and_leaves_the_inside():
    chip = np.full((40, 40, 3), 90, dtype=np.uint8)
    mask = np.zeros((40, 40), dtype=bool)
    mask[10:30, 5:25] = True
    drawn = marks.outline(chip, (5, 10, 25, 30), mask, width=2)
    red = np.all(drawn == marks.OUTLINE_RGB, axis=2)
    assert red[10, 5:25].all() and red[29, 5:25].all() and red[10:30, 5].all()
    assert not red[14:26, 9:21].any() and not red[:8].any()
    assert (chip == 90).all()          # the chip itself is untouched


def test_crop_keeps_the_region_with_a_margin():
    chip = np.arange(100 * 80 * 3, dtype=np.uint32).reshape(100, 80, 3).astype(np.uint8)
    cropped = marks.crop(chip, (20, 30, 40, 50), margin=0.1)
    assert cropped.shape[:2] == (24, 24)
    assert (cropped == chip[28:52, 18:42]).all()


def test_an_original_format_onevision_folder_is_named_and_refused_with_the_release_to_use(tmp_path):
    from mgimm_core.describer import load_describer

    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llava", "mm_vision_tower": "google/siglip-so400m-patch14-384", "mm_projector_type": "mlp2x_gelu",
        "image_aspect_ratio": "anyres_max_9", "mm_patch_merge_type": "spatial_unpad", "hidden_size": 896}))
    kind = detect(json.loads((tmp_path / "config.json").read_text()), tmp_path)
    assert kind.name == "llava-next-original"
    with pytest.raises(ModelError) as caught:
        load_describer(tmp_path)
    assert "llava-onevision-qwen2" in str(caught.value) and caught.value.code == "model"


def test_rows_record_the_description_question_each_family_is_asked():
    from mgimm_core.prompts import DESCRIPTION_PROMPT, TEXT_REGION_PROMPTS

    assert family("mgimm").recorded_prompt(None) == DESCRIPTION_PROMPT
    assert family("geochat").recorded_prompt(None) == TEXT_REGION_PROMPTS["geochat"][1]
    qwen = family("qwen2.5-vl").recorded_prompt(None)
    assert "{region}" in qwen and qwen != DESCRIPTION_PROMPT
    assert family("qwen2.5-vl").recorded_prompt("What is in {region}?") == "What is in the region {region}?"


@pytest.mark.parametrize("served, expected", [
    ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl"), ("Qwen/Qwen3-VL-8B-Instruct", "qwen3-vl"),
    ("OpenGVLab/InternVL3-2B-hf", "internvl"), ("llava-hf/llava-onevision-qwen2-7b-ov-hf", "llava-onevision"),
    ("florence-community/Florence-2-large", "florence2"), ("HuggingFaceTB/SmolVLM2-2.2B-Instruct", "smolvlm"),
    ("HuggingFaceTB/SmolVLM-Instruct", "idefics3"), ("llava-hf/llava-1.5-7b-hf", "llava-hf"),
    ("MBZUAI/geochat-7B", "geochat"), ("gemma3:4b", None)])
def test_the_family_of_a_served_model_is_guessed_from_its_id_or_left_to_family(served, expected):
    from mgimm_core.families import for_served_id

    found = for_served_id(served)
    assert (found.name if found else None) == expected


@pytest.mark.parametrize("name", ["qwen2.5-vl", "qwen3-vl", "internvl", "florence2"])
def test_every_text_convention_writes_a_region_without_a_local_processor(name):
    """An endpoint has no processor: the family writes the region as the server's model reads it."""
    text = family(name).region_text(None, (10, 20, 110, 220), 448, 448)
    assert text and any(ch.isdigit() for ch in text)
