"""World v3 (issue 22 item 4): GSDs from 0.3 to 30 m, grayscale, clouds, the GSD in the question."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mgimm_core.prompts import ATTRIBUTE_PROMPT, gsd_phrase, with_gsd
from training.synthetic import generate_scene
from training.synthetic.objects import build
from training.synthetic.scene import MAX_CLOUD_OPACITY, MIN_OBJECT_PX, Look, _Placer, draw_look

SUN = ((0.5, 0.8), 0.6)


def test_an_object_smaller_than_two_pixels_is_painted_but_not_in_the_truth():
    scene = generate_scene(4, 64, 30.0, look=Look(terrain="plain", cloud_cover=0.0))
    img = np.full((64, 64, 3), 100.0, np.float32)
    rng = np.random.default_rng(0)
    placer = _Placer(scene.landcover, img, rng, 30.0, SUN, MIN_OBJECT_PX)
    placer.place(build("ship", rng, 30.0, 30.0, 45.0, 30.0, SUN, length_m=40.0))   # 1.3 px: vanishes
    assert placer.objects == []
    assert (img != 100.0).any()                  # ... though its pixels still mix in the sensor's record
    placer.place(build("ship", rng, 10.0, 10.0, 45.0, 30.0, SUN, length_m=90.0))   # 3 px: kept
    assert [o.name for o in placer.objects] == ["ship"]


def test_at_30_m_no_vehicle_is_in_the_truth_and_every_object_spans_two_pixels():
    for seed in (1, 2, 3):
        scene = generate_scene(seed, 128, 30.0, look=Look())
        assert all(o.name != "vehicle" for o in scene.objects)
        assert all(max(o.length_m, o.width_m) / 30.0 >= MIN_OBJECT_PX for o in scene.objects)


def test_at_half_a_metre_vehicles_are_in_the_truth():
    names = {o.name for seed in range(1, 7) for o in generate_scene(seed, 256, 0.5, look=Look(terrain="plain")).objects}
    assert "vehicle" in names and "building" in names


def test_grayscale_scenes_have_equal_bands_and_are_written_as_one_band(tmp_path):
    import rasterio

    from training.synthetic.export import write_geotiff

    gray = generate_scene(5, 96, 2.0, look=Look(bands="gray", cloud_cover=0.0))
    rgb = generate_scene(5, 96, 2.0, look=Look(bands="rgb", cloud_cover=0.0))
    assert gray.bands == "gray" and gray.image.shape == (96, 96, 3)
    assert (gray.image[..., 0] == gray.image[..., 1]).all() and (gray.image[..., 1] == gray.image[..., 2]).all()
    assert not (rgb.image[..., 0] == rgb.image[..., 2]).all()
    write_geotiff(gray, tmp_path / "gray.tif")
    write_geotiff(rgb, tmp_path / "rgb.tif")
    with rasterio.open(tmp_path / "gray.tif") as g, rasterio.open(tmp_path / "rgb.tif") as c:
        assert (g.count, c.count) == (1, 3)
        assert (g.read(1) == gray.image[..., 0]).all()


def test_objects_under_thick_cloud_leave_the_truth_and_descriptions_mention_clouds():
    from training.synthetic.text import describe_tile

    scene = generate_scene(8, 192, 5.0, look=Look(cloud_cover=0.4, terrain="plain"))
    assert scene.cloud is not None and (scene.cloud > 0.5).mean() > 0.1
    for o in scene.objects:
        x, y = o.centroid
        assert scene.cloud[int(y), int(x)] <= MAX_CLOUD_OPACITY
    text = describe_tile(scene, (0, 0, 192, 192), np.random.default_rng(0))
    assert "Clouds cover" in text


def test_world_v2_is_the_default_and_has_no_v3_features():
    scene = generate_scene(3, 128)
    assert scene.bands == "rgb" and scene.cloud is None and scene.landcover.terrain is None
    assert "world" not in scene.meta


def test_drawn_looks_span_the_gsd_range_and_include_gray():
    looks = [draw_look(seed) for seed in range(200)]
    gsds = [g for g, _ in looks]
    assert min(gsds) < 0.6 and max(gsds) > 15 and all(0.3 <= g <= 30 for g in gsds)
    assert 0.1 < sum(look.bands == "gray" for _, look in looks) / len(looks) < 0.4


def test_gsd_phrase_snaps_to_known_steps_and_is_empty_when_unknown():
    assert gsd_phrase(0.5) == "Pixel size 0.5 m."
    assert gsd_phrase(28.5) == "Pixel size 30 m."
    assert gsd_phrase(1.2) == "Pixel size 1 m."
    assert gsd_phrase(float("nan")) == "" and gsd_phrase(None) == ""
    assert with_gsd(ATTRIBUTE_PROMPT, math.nan) == ATTRIBUTE_PROMPT


@pytest.mark.parametrize("gsd_prompt", [False, True])
def test_the_gsd_phrase_reaches_the_model_only_when_its_processor_says_so(tiny_model_dir, gsd_prompt):
    from mgimm_core.describer import Describer
    from mgimm_core.model.processing_mgimm import MGIMMProcessor
    from mgimm_core.model.testing_mgimm import random_chip

    describer = Describer.load(tiny_model_dir, device="cpu", max_new_tokens=3)
    describer.processor.gsd_prompt = gsd_prompt
    chips = [random_chip(40, 40, 1), random_chip(40, 40, 2)]
    phrase = {id(chips[0]): "Pixel size 0.5 m. ", id(chips[1]): "Pixel size 30 m. "}
    seen: list[tuple[str, str]] = []          # (the chip's own phrase, a question asked about it)
    original = MGIMMProcessor.__call__

    def spy(self, images, *args, **kwargs):
        prompts = kwargs["prompts"]
        each = [prompts] * len(images) if isinstance(prompts, str) else prompts
        seen.extend((phrase[id(image)], p) for image, p in zip(images, each))
        return original(self, images, *args, **kwargs)

    MGIMMProcessor.__call__ = spy          # type: ignore[method-assign]
    try:
        # every question: attributes, a guide's and its check (squares scored), the description
        describer.describe(chips, [(2.0, 2.0, 30.0, 30.0)] * 2, [None, None], gsds=[0.5, 28.5],
                           guides=[[((4.0, 4.0, 12.0, 12.0), None)], []])
    finally:
        MGIMMProcessor.__call__ = original  # type: ignore[method-assign]
    assert len(seen) >= 2 * 2 + 1 + 3         # 2 chips x 2 questions, the guide's answer, its squares
    if gsd_prompt:
        assert all(p.startswith(own) and p.count("Pixel size") == 1 for own, p in seen)
    else:
        assert not any("Pixel size" in p for _, p in seen)


def test_gsd_prompt_is_saved_only_when_set_so_old_processors_load_without_it(tiny_model_dir, tmp_path):
    import json

    from mgimm_core.model.processing_mgimm import MGIMMProcessor

    processor = MGIMMProcessor.from_pretrained(tiny_model_dir)
    assert processor.gsd_prompt is False
    processor.save_pretrained(tmp_path / "old")
    assert "gsd_prompt" not in json.loads((tmp_path / "old" / "mgimm_processor.json").read_text())
    processor.gsd_prompt = True
    processor.save_pretrained(tmp_path / "new")
    assert MGIMMProcessor.from_pretrained(tmp_path / "new").gsd_prompt is True


def test_describe_puts_each_regions_gsd_in_the_questions_of_a_gsd_trained_model(tiny_model_dir, tmp_path):
    """End to end through `mgimm_core.describe`: the geo core's chip GSD reaches the question."""
    import shutil

    import mgimm_core
    from mgimm_core.model.processing_mgimm import MGIMMProcessor
    from training.synthetic.demo_inputs import write_demo_inputs

    model_dir = tmp_path / "gsd_model"
    shutil.copytree(tiny_model_dir, model_dir)
    processor = MGIMMProcessor.from_pretrained(model_dir)
    processor.gsd_prompt = True
    processor.save_pretrained(model_dir)
    inputs = write_demo_inputs(tmp_path / "inputs", seed=11, size=256, gsd=2.0, objects=2)
    seen: list[str] = []
    original = MGIMMProcessor.__call__

    def spy(self, *args, **kwargs):
        prompts = kwargs["prompts"]
        seen.extend([prompts] if isinstance(prompts, str) else prompts)
        return original(self, *args, **kwargs)

    engine = mgimm_core.load_model(str(model_dir), max_new_tokens=3, threads=1)
    MGIMMProcessor.__call__ = spy          # type: ignore[method-assign]
    try:
        frame = mgimm_core.describe(inputs.scene, inputs.aoi, model=engine)
    finally:
        MGIMMProcessor.__call__ = original  # type: ignore[method-assign]
        engine.close()
    assert seen and all(p.startswith("Pixel size ") for p in seen)
    # the phrases are those of the rows' own gsd_m (the chip as read: small chips are decimated)
    assert {p.split(". ")[0] + "." for p in seen} == {gsd_phrase(g) for g in frame["gsd_m"]}
    assert all(g >= 2.0 for g in frame["gsd_m"])


def test_a_v2_share_mixes_world_v2_scenes_into_world_v3_by_seed():
    from training.demo_data import generate_samples, scene_world

    worlds = [scene_world(seed, 3, 0.25) for seed in range(1, 401)]
    assert worlds == [scene_world(seed, 3, 0.25) for seed in range(1, 401)]     # the seed decides
    assert 0.18 < worlds.count(2) / len(worlds) < 0.32 and set(worlds) == {2, 3}
    assert {scene_world(seed, 3, 0.0) for seed in range(1, 401)} == {3}
    assert {scene_world(seed, 2, 0.9) for seed in range(1, 401)} == {2}           # only world 3 mixes
    v2_seed = worlds.index(2) + 1
    samples = generate_samples([v2_seed], scene_size=256, model_input=64, descriptions_per_scene=1,
                               world=3, v2_share=0.25, gsd_prompt=True)
    plain = generate_samples([v2_seed], scene_size=256, model_input=64, descriptions_per_scene=1, world=2,
                             gsd_prompt=True)
    assert [s.answer for s in samples] == [s.answer for s in plain]               # that scene is world v2's


def test_demo_inputs_can_be_a_world_v3_scene(tmp_path):
    import rasterio

    from training.synthetic.demo_inputs import write_demo_inputs
    from training.synthetic.scene import draw_look

    seed = next(s for s in range(100) if draw_look(s)[1].bands == "gray" and draw_look(s)[0] < 2)
    inputs = write_demo_inputs(tmp_path, seed=seed, size=256, crs="EPSG:32633", objects=3, world=3)
    with rasterio.open(inputs.scene) as src:
        assert src.count == 1 and abs(src.res[0] - draw_look(seed)[0]) < 1e-6
