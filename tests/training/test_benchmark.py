"""The truth benchmark (training/benchmark.py): its splits never meet the seeds training and tuning
draw, its AOIs carry the truth they are scored against, and its grammar check reads the generator's
own text as good and broken phrases as broken."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely

from training.benchmark import (AOI_COUNTS, SPLIT_WORLD, SPLITS, Grammar, covers_named, dominant_cover,
                                doubled_phrases, doubled_words, draw_regions, kinds, repeated_clauses, repeated_items,
                                scene_case,
                                used_seeds)


def test_splits_are_disjoint_from_every_seed_training_and_tuning_use():
    splits = {name: set(seeds) for name, seeds in SPLITS.items()}
    assert {"test", "dev", "test-v3", "dev-v3"} <= set(splits) and all(splits.values())
    assert set(SPLIT_WORLD) == set(SPLITS)
    for a in splits:
        for b in splits:
            assert a == b or not splits[a] & splits[b], (a, b)
    frozen = set().union(*splits.values())
    for who, seeds in used_seeds().items():
        assert not set(seeds) & frozen, who
    # the recipe's own split function draws from those ranges
    from training.demo_recipe import PRESETS, split_seeds

    for preset in PRESETS.values():
        for split in ("train", "heldout"):
            assert not set(split_seeds(split, preset)) & frozen


def test_world_v3_split_writes_its_look_and_land_cover_truth(tmp_path):
    """A v3 split scene is drawn at its own GSD and look; AOIs carry the land cover shares scored
    against the description's cover words."""
    import rasterio

    from training.synthetic.scene import draw_look

    seed = next(s for s in SPLITS["dev-v3"] if draw_look(s)[1].bands == "gray")
    scene, regions, _ = scene_case(seed, tmp_path, world=SPLIT_WORLD["dev-v3"])
    with rasterio.open(tmp_path / "scene.tif") as src:
        assert src.count == 1 and abs(src.res[0] - draw_look(seed)[0]) < 1e-6
    assert regions and all(abs(sum(v for k, v in r.covers.items() if k != "clouds") - 1) < 0.2 for r in regions)
    assert dominant_cover({"forest": 0.5, "grass": 0.3}) == "forest"
    assert dominant_cover({"forest": 0.3, "grass": 0.3}) is None
    assert dominant_cover({"forest": 0.9, "clouds": 0.7}) == "clouds"
    text = "Forest covers most of the image; the sea occupies the east. Clouds cover the north."
    assert covers_named(text) == {"forest", "sea", "clouds"}
    assert covers_named("Built-up urban blocks cover the west.") == {"urban"}
    assert not covers_named("There are two buildings.")


def test_regions_carry_their_truth(tmp_path):
    from training.synthetic.scene import generate_scene

    scene = generate_scene(SPLITS["dev"][1], size=640)
    regions = draw_regions(scene, np.random.default_rng(0))
    by_kind = {k: [r for r in regions if r.kind == k] for k in AOI_COUNTS}
    assert all(by_kind[k] for k in ("single", "partial", "empty"))
    for r in by_kind["empty"]:
        assert not r.touching and r.guide is not None and r.box.contains(r.guide.centroid)
    for r in by_kind["partial"]:
        share = r.target.footprint.intersection(r.box).area / r.target.footprint.area
        assert 0.2 < share < 0.8 and r.target in r.touching
    for r in by_kind["single"]:
        assert r.target in r.inside
    for r in by_kind["shifted"]:
        assert r.target in r.inside and not any(o.footprint.intersects(r.guide) for o in scene.objects)
    for r in regions:
        assert all(o not in r.touching for o in r.neighbours)
    # written as a user's inputs: AOIs in EPSG:4326 around the pixels they were drawn on
    _, drawn, layers = scene_case(SPLITS["dev"][1], tmp_path)
    features = json.loads((tmp_path / "aoi.geojson").read_text())["features"]
    assert [f["properties"]["id"] for f in features] == [r.id for r in drawn]
    lon, lat = shapely.geometry.shape(features[0]["geometry"]).centroid.coords[0]
    assert -180 <= lon <= 180 and -90 <= lat <= 90


@pytest.fixture(scope="module")
def grammar():
    return Grammar.from_generator()       # the benchmark's own (about 30 s)


@pytest.mark.slow
def test_grammar_reads_generator_text_as_good_and_catches_broken_phrases(grammar):
    from training.synthetic import describe_tile, generate_scene

    scene = generate_scene(SPLITS["dev"][2], size=512)
    rng = np.random.default_rng(1)
    texts = [describe_tile(scene, (int(x), int(y), 200, 200), rng) for x, y in rng.integers(0, 312, size=(10, 2))]
    assert not [grammar.broken(t) for t in texts if grammar.broken(t)]
    good = texts[0]
    assert grammar.broken(good.replace(" the ", " the the ", 1))
    assert grammar.broken("In this high-shaped resolution image we see a mainly rural area.")
    assert doubled_words("a building in in the centre") == ["in"] and not doubled_words(good)
    assert not [repeated_clauses(t) for t in texts if repeated_clauses(t)]     # the generator never repeats one
    assert repeated_clauses("Mountains occupy the centre; mountains occupy the centre.") == ["mountains occupy the centre"]
    assert not [repeated_items(t) for t in texts if repeated_items(t)]
    assert not [doubled_phrases(t) for t in texts if doubled_phrases(t)]
    assert doubled_phrases("three grey buildings in the lower left and the lower left and ten other buildings.") == [
        "the lower left and the lower left"]
    assert not doubled_phrases("Roads and rivers cross the north and the south.")
    assert repeated_items("These are seventeen white rectangular buildings across the image, twelve white rectangular "
                          "buildings across the image and 48 other buildings.") == [
        "twelve white rectangular buildings across the image"]
    assert repeated_items("They include one red building in the north and one red building in the north.") == [
        "one red building in the north"]
    assert not repeated_items("They include one red square building in the centre and one red rectangular building "
                              "in the centre. There is one red square building in the centre.")   # other sentence
    assert kinds("two small red storage tanks") == ["<number>", "<size>", "<colour>", "<class>"]


def test_a_scene_without_objects_has_no_layers_to_guide(tmp_path):
    """World-v3 scenes at coarse GSDs can hold no object: their guided runs are skipped, not refused."""
    from training.benchmark import _write_layer

    assert _write_layer(tmp_path / "none.geojson", []) is None and not (tmp_path / "none.geojson").exists()
    assert _write_layer(tmp_path / "one.geojson", [("a", shapely.box(0, 0, 1, 1))]) == str(tmp_path / "one.geojson")


def test_guide_threshold_keeps_empty_land_under_target_and_refuses_test_splits():
    from training.thresholds import choose, curve, main

    guides = ([("true", p, False) for p in (1e-4, 1e-3, 0.02, 0.3)] + [("true", 1e-5, True)]
              + [("empty_land", p, False) for p in (0.001, 0.5, 0.9, 0.95, 0.99)])
    points = curve(guides)
    best = choose(points, 0.2)
    # one of five guides on empty land (0.2) may be confirmed: up to under 0.5, all four true ones are
    assert best["empty_land"] == 0.2 and best["true"] == 0.8 and 0.3 <= best["threshold"] < 0.5
    # none: under 0.001, where only the 1e-4 true guide is confirmed
    strict = choose(points, 0.0)
    assert strict["empty_land"] == 0.0 and strict["true"] == 0.2 and strict["threshold"] < 0.001
    # a true guide the model itself answers "none" for is never confirmed, whatever the threshold
    assert points[-1]["true"] == 0.8
    with pytest.raises(SystemExit):
        main(["--model", "unused", "--split", "test-v3"])
    # a folder that is not an MGIMM model is refused at once (usage error), before any describe run
    with pytest.raises(SystemExit) as refused:
        main(["--model", "no-such-folder", "--split", "dev-v3"])
    assert refused.value.code == 2


def test_region_floor_keeps_confident_none_answers_and_sets_the_folders_floor_aside(tmp_path):
    import json

    from training.thresholds import choose_floor, none_answers, without_floor

    # (no_object_p, answered "none", AOI empty): two right confident answers, one wrong unsure one,
    # one wrong confident one, an empty AOI answered with an object, one region not measured
    answers = [(0.99, True, True), (0.95, True, True), (0.55, True, False), (0.97, True, False),
               (0.2, False, True), (None, True, True)]
    at_zero = none_answers(answers, 0.0)
    assert (at_zero["said"], at_zero["precision"], at_zero["recall"]) == (4, 0.5, pytest.approx(2 / 3))
    best, points = choose_floor(answers)
    # above 0.55 the unsure wrong answer goes; above 0.95 a right one goes too
    assert best["floor"] == 0.6 and best["precision"] == pytest.approx(2 / 3) and len(points) > 10
    with pytest.raises(SystemExit):
        choose_floor([(None, True, True)])
    # measured, but the model never said "none": no floor (F1 0 everywhere, the lowest wins)
    assert choose_floor([(0.1, False, True), (0.2, False, False)])[0]["floor"] == 0.0
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "mgimm_processor.json").write_text(json.dumps({"no_object_probability": 0.9, "image_size": 126}))
    (tmp_path / "view").mkdir()
    view = without_floor(str(model), tmp_path / "view")
    assert json.loads((view / "mgimm_processor.json").read_text()) == {"image_size": 126}
    assert (view / "config.json").resolve() == (model / "config.json").resolve()
    assert json.loads((model / "mgimm_processor.json").read_text())["no_object_probability"] == 0.9


def test_misses_are_broken_down_by_the_objects_size_in_pixels():
    """Attribute figures per object size, wrong "no distinct objects" answers by the size of what
    they missed, and invented objects per kind of AOI: scored from hand-written answer rows against
    a real scene's truth."""
    from training.benchmark import PIXEL_BUCKETS, Tally, pixel_bucket, report, score_case
    from mgimm_core.vocabulary import NO_OBJECT_VALUE
    from training.synthetic.scene import generate_scene

    assert pixel_bucket(shapely.box(0, 0, 5, 3)) == "under 8 px"
    assert pixel_bucket(shapely.box(0, 0, 10, 30)) == "24 px and over"
    scene = generate_scene(SPLITS["dev"][1], size=640)
    regions = draw_regions(scene, np.random.default_rng(0))
    singles = [r for r in regions if r.kind == "single" and [o.id for o in r.inside] == [r.target.id]]
    partial = next(r for r in regions if r.kind == "partial")
    right, wrong = singles[0], singles[1]

    def row(name, t=None):
        return {"description": f"There is one {name}." if name != NO_OBJECT_VALUE else "No distinct objects.",
                "object": name, "color": t.color if t else None, "shape": t.shape if t else None,
                "size": t.size if t else None}

    rows = {right.id: row(right.target.name, right.target),
            wrong.id: row("windmill" if wrong.target.name != "windmill" else "ship", wrong.target),
            partial.id: row(NO_OBJECT_VALUE)}
    tally = Tally()
    score_case(regions, {"unguided": (rows, {})}, tally, Grammar())
    result = report(tally)["by_object_pixels"]
    assert list(result) == [label for _, label in PIXEL_BUCKETS]
    assert sum(b["attribute_regions"] for b in result.values()) == 2
    a, b = pixel_bucket(right.target.footprint), pixel_bucket(wrong.target.footprint)
    if a == b:
        assert result[a]["attribute_name_right"] == 0.5
    else:
        assert (result[a]["attribute_name_right"], result[b]["attribute_name_right"]) == (1.0, 0.0)
    parts = [o.footprint.intersection(partial.box) for o in partial.touching]
    missed = pixel_bucket(max(parts, key=lambda g: g.area))     # the largest object part it said was not there
    assert result[missed]["no_object_answers_wrong"] == 1
    assert sum(b["no_object_answers_wrong"] for b in result.values()) == 1


def test_regions_kept_where_the_model_is_sure_are_scored_at_each_step():
    """`by_object_p`: an attribute AOI is kept at a step of SURE_LADDER where its `object_p` reaches
    it; a "none" answer (no object_p: NaN in a frame) is never kept."""
    from training.benchmark import SURE_LADDER, Tally, report, score_case
    from mgimm_core.vocabulary import NO_OBJECT_VALUE
    from training.synthetic.scene import generate_scene

    scene = generate_scene(SPLITS["dev"][1], size=640)
    regions = draw_regions(scene, np.random.default_rng(0))
    singles = [r for r in regions if r.kind in ("single", "shifted") and [o.id for o in r.inside] == [r.target.id]]
    assert len(singles) >= 3
    low, high = SURE_LADDER[0], SURE_LADDER[-1]

    def row(region, name, p):
        t = region.target
        return {"description": f"There is one {name}.", "object": name, "color": t.color, "shape": t.shape,
                "size": t.size, "object_p": p}

    wrong_name = {"windmill": "ship"}
    a, b, c = singles[:3]
    rows = {a.id: row(a, a.target.name, high),                                   # right and sure
            b.id: row(b, wrong_name.get(b.target.name, "windmill"), low),      # wrong, sure at the first step only
            c.id: row(c, NO_OBJECT_VALUE, float("nan"))}                       # "none" (no value in a frame): never kept
    tally = Tally()
    score_case(regions, {"unguided": (rows, {})}, tally, Grammar())
    result = report(tally)
    kept = result["by_object_p"]
    assert list(kept) == [f">= {level}" for level in SURE_LADDER]
    n = result["attribute_regions"]
    assert kept[f">= {low}"]["kept"] == round(2 / n, 4) and kept[f">= {low}"]["attribute_name_right"] == 0.5
    assert kept[f">= {high}"]["kept"] == round(1 / n, 4) and kept[f">= {high}"]["attribute_name_right"] == 1.0
    assert kept[f">= {high}"]["attribute_all_right"] == 1.0
    assert kept[f">= {high}"]["description_names_true_object"] == 1.0
