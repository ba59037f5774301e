"""Every word from the model: the repetition guard only forbids (never a doubled word, never a token
picked by code), repeated sentences are cut whole; guide objects are checked by the model's own
answer (a guide on empty land of a fixed scene is not confirmed, and only confirmed guides are
region prompts of the description)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgimm_core.answers import GUIDE_CONFIRMED, GUIDE_NOT_FOUND
from mgimm_core.describer import Describer
from mgimm_core.mentions import words
from mgimm_core.vocabulary import NO_OBJECT_VALUE
from mgimm_core.model.constrained_mgimm import FirstTokenFloor, RepeatMarks, RepetitionGuard, trim_repeats, word_tokens
from mgimm_core.model.testing_mgimm import random_chip


def _doubled(ids: list[int], mask: torch.Tensor) -> list[int]:
    """Word tokens twice in a row, tokens that write nothing (ids past the tokenizer) skipped."""
    written = [t for t in ids if t < len(mask) and mask[t]]
    return [a for a, b in zip(written, written[1:]) if a == b]


def test_guard_never_emits_a_doubled_word(tiny_model_dir):
    describer = Describer.load(tiny_model_dir, device="cpu", max_new_tokens=24)
    mask = word_tokens(describer.processor.tokenizer)
    chips = [random_chip(32, 32, seed=s) for s in range(8)]
    regions = [[((2.0, 2.0, 30.0, 30.0), None)]] * 8
    patches = describer.patches(chips)
    # the random model does double words when nothing forbids it (so this test can fail) ...
    batch = describer.inputs(chips, regions, "describe", "global_region")
    with torch.no_grad():
        raw = describer.model.generate(**batch, patches=patches, mode="global_region", max_new_tokens=24)
    assert any(_doubled(row, mask) for row in raw.tolist())
    # ... and never through the describer, nor after a kept prefix ending in the word it would repeat
    for row in describer.generate_ids(chips, regions, "describe", "global_region", patches):
        assert not _doubled(row, mask), describer.decode(row)
    prefixes = [row[:1] for row in raw.tolist()]
    for row in describer.generate_ids(chips, regions, "describe", "global_region", patches, prefixes=prefixes):
        assert not _doubled(row, mask), describer.decode(row)
    for text in describer.describe(chips, [(2.0, 2.0, 30.0, 30.0)] * 8, [None] * 8):
        found = words(text.description)
        assert not [a for a, b in zip(found, found[1:]) if a == b], text.description


def test_guard_only_forbids_the_repeated_word():
    guard = RepetitionGuard(torch.tensor([False, True, True, True]), prefixes=[[2], []], special=frozenset({0}))
    scores = torch.zeros(2, 6)
    out = guard(torch.zeros(2, 0, dtype=torch.long), scores.clone())   # first step: the prefix's last token
    assert torch.isneginf(out[0]).tolist() == [False, False, True, False, False, False]
    assert torch.isfinite(out[1]).all()
    out = guard(torch.tensor([[1, 0], [0, 0]]), scores.clone())        # a special token writes nothing ...
    assert torch.isneginf(out[0]).tolist() == [False, True, False, False, False, False]
    assert torch.isfinite(out[1]).all()                                 # ... and may itself repeat
    out = guard(torch.tensor([[3, 5]]), scores[:1].clone())            # nor does an id past the tokenizer
    assert torch.isneginf(out[0]).tolist() == [False, False, False, True, False, False]


def test_repeated_sentences_and_unfinished_sentences_are_trimmed_whole():
    dot = RepeatMarks(frozenset({9}))
    s1, s2 = [1, 2, 9], [3, 4, 9]
    assert trim_repeats(s1 + s2 + s1 + [5, 6], dot) == s1 + s2           # the loop from its first repeat
    assert trim_repeats(s1 + s2, dot) == s1 + s2                          # nothing repeated: untouched
    assert trim_repeats(s1 + [3, 4], dot) == s1                           # ends mid-phrase (budget or model)
    assert trim_repeats([3, 4, 5], dot) == [3, 4, 5]                      # no full sentence: kept whole


def test_a_repeated_clause_is_dropped_with_its_mark_and_grammar_holds():
    semi, comma = 8, 7
    marks = RepeatMarks(frozenset({9}), frozenset({semi, comma}))
    # "mountains occupy the centre; mountains occupy the centre." -> the first clause and its full stop
    assert trim_repeats([1, 2, 3, semi, 1, 2, 3, 9], marks) == [1, 2, 3, 9]
    # a repeat of a clause from an earlier sentence, between two new ones, goes with its own mark only
    assert trim_repeats([1, 2, 9, 4, 5, comma, 1, 2, semi, 6, 9], marks) == [1, 2, 9, 4, 5, semi, 6, 9]
    # the first clause of a sentence is never dropped (its sentence would start with a mark)
    assert trim_repeats([1, 2, semi, 4, 9, 1, 2, semi, 5, 9], marks) == [1, 2, semi, 4, 9, 1, 2, semi, 5, 9]
    # a clause that only shares words with an earlier one stays; without clause marks nothing changes
    assert trim_repeats([1, 2, 3, semi, 1, 2, 9], marks) == [1, 2, 3, semi, 1, 2, 9]
    assert trim_repeats([1, 2, 3, semi, 1, 2, 3, 9], RepeatMarks(frozenset({9}))) == [1, 2, 3, semi, 1, 2, 3, 9]


def test_a_list_item_repeated_but_for_its_count_is_dropped_with_its_mark():
    """The demo tokenizer's own ids: "These are seventeen white rectangular buildings across the image,
    fifteen white rectangular buildings across the image, twelve ... and 48 other buildings." keeps
    its first item and its last ("... across the image and 48 other buildings.")."""
    from mgimm_core.model.processing_mgimm import MGIMMProcessor
    from mgimm_core.model_dir import DEMO_MODEL_DIR

    tokenizer = MGIMMProcessor.from_pretrained(DEMO_MODEL_DIR).tokenizer
    marks = RepeatMarks.of(tokenizer)
    assert {tokenizer.convert_tokens_to_ids(w) for w in ("one", "twelve", "48")} <= marks.counts

    def trimmed(text: str) -> str:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return tokenizer.decode(trim_repeats(ids, marks))

    group = "white rectangular buildings scattered across the image"
    said = (f"The image contains 190 buildings. These are seventeen {group}, fifteen {group}, twelve {group}, "
            f"twelve {group} and 48 other buildings.")
    assert trimmed(said) == trimmed(f"The image contains 190 buildings. These are seventeen {group} and 48 other "
                                    f"buildings.") != trimmed("The image contains 190 buildings.")
    assert "seventeen" in trimmed(said) and "fifteen" not in trimmed(said) and "48 other" in trimmed(said)
    # an item after "and" goes with its "and"; items that differ, or repeat another sentence's, stay
    assert trimmed("They include one red building in the north and one red building in the north.") == trimmed(
        "They include one red building in the north.")
    kept = ("There are two buildings. They include one red square building in the centre and one red rectangular "
            "building in the centre. One red square building lies in the centre.")
    assert trimmed(kept) == tokenizer.decode(tokenizer(kept, add_special_tokens=False)["input_ids"])
    # found in review: an "and" item said in an earlier sentence stays; ", and" goes whole; a sentence
    # that begins with "And" keeps its first clause; numbers after the count tell items apart
    same = "The north contains farmland and two buildings. The south contains forest and two buildings."
    assert trimmed(same) == tokenizer.decode(tokenizer(same, add_special_tokens=False)["input_ids"])
    for mark in (",", ";"):
        assert trimmed(f"These are seventeen red buildings{mark} and fifteen red buildings.") == trimmed(
            "These are seventeen red buildings.")
    for kept in ("Two roads cross the north. And two roads cross the north.",
                 "One river runs 100 m north, one river runs 200 m north."):
        assert trimmed(kept) == tokenizer.decode(tokenizer(kept, add_special_tokens=False)["input_ids"])
    # a phrase doubled around "and" loses its second half; the words after it stay
    assert trimmed("These are three grey rectangular buildings in the lower left and the lower left and ten "
                   "other buildings.") == trimmed("These are three grey rectangular buildings in the lower left and "
                                                  "ten other buildings.")
    # "and" inside a clause, not before a count, opens no item: farmland and farmland is not a list
    assert "grassland and farmland" in trimmed("Farmland parcels cover the north; grassland and farmland parcels "
                                               "cover the south.")


def test_in_a_subword_vocabulary_only_whole_words_open_or_count_list_items():
    """"and" and counts are whole words only: the piece "and" of "S" + "and" opens no item."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "Ġand": 1, "and": 2, "Ġtwo": 3, "two": 4, "S": 5, "Ġtwelve": 6}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab, [])), bos_token="<s>")
    marks = RepeatMarks.of(tokenizer)
    assert marks.joins == {1} and marks.counts == {3, 6}


@pytest.fixture(scope="module")
def guided_scene(tmp_path_factory):
    """The demo model on a fixed dev-split scene of the benchmark, guided by object-shaped
    footprints put on empty land and by the true footprints."""
    import mgimm_core
    from training.benchmark import SPLITS, scene_case

    directory = tmp_path_factory.mktemp("guides")
    _, regions, layers = scene_case(SPLITS["dev"][4], directory)   # a world-v2 dev scene (0.5 m RGB)
    engine = mgimm_core.load_model(None, device="cpu", max_new_tokens=80, threads=1)
    try:
        wrong = mgimm_core.describe(str(directory / "scene.tif"), layers["wrong"], model=engine,
                                    guide=layers["wrong_guides"])
        true = mgimm_core.describe(str(directory / "scene.tif"), layers["objects"], model=engine,
                                   guide=str(directory / "truth.gpkg"))
    finally:
        engine.close()
    return regions, wrong, true


@pytest.mark.slow
def test_guide_on_empty_land_is_not_confirmed(guided_scene):
    regions, wrong, true = guided_scene
    empty = {r.id for r in regions if r.kind == "empty"}
    objects = wrong.attrs["objects"]
    on_land = objects[objects["parent_id"].isin(empty)]
    assert len(on_land) == len(empty) >= 2
    assert set(on_land["guide_status"]) == {GUIDE_NOT_FOUND}, on_land[["attribute_text", "guide_status"]]
    # the model still answers attributes for them (the judgement is beside the answer, not instead)
    assert on_land["attribute_text"].notna().all()
    # descriptions see only confirmed guides: a row whose guides were all not found is described
    # as an unguided one would be, not from the guides' answers
    statuses = set(true.attrs["objects"]["guide_status"])
    assert statuses <= {GUIDE_CONFIRMED, GUIDE_NOT_FOUND} and GUIDE_CONFIRMED in statuses


def test_not_found_guides_are_left_out_of_the_description(tiny_model_dir):
    # with every guide judged not found, the description is the unguided one, word for word
    describer = Describer.load(tiny_model_dir, device="cpu", max_new_tokens=12, agree=False)
    describer.guide_no_object_probabilities = lambda images, guides, patches, prompts: [1.0] * len(guides)
    chips = [random_chip(32, 32, seed=s) for s in range(3)]
    boxes = [(2.0, 2.0, 30.0, 30.0)] * 3
    guide = ((8.0, 8.0, 16.0, 16.0), np.ones((32, 32), dtype=bool))
    guided = describer.describe(chips, boxes, [None] * 3, guides=[[guide]] * 3)
    plain = describer.describe(chips, boxes, [None] * 3)
    assert [o.guide_status for r in guided for o in r.objects] == [GUIDE_NOT_FOUND] * 3
    assert [r.description for r in guided] == [r.description for r in plain]


def test_a_model_folder_carries_its_own_guide_threshold(tiny_model_dir, tmp_path):
    """mgimm_processor.json's guide_no_object_probability survives save/load and is the threshold
    the describer judges guides by: at 1.0 no probability exceeds it (every guide found), at 1e-30 any does."""
    from mgimm_core.model.processing_mgimm import MGIMMProcessor

    describer = Describer.load(tiny_model_dir, device="cpu", max_new_tokens=4, agree=False)
    describer.processor.guide_no_object_probability = 1e-30
    describer.processor.save_pretrained(tmp_path)
    assert MGIMMProcessor.from_pretrained(tmp_path).guide_no_object_probability == 1e-30
    chips = [random_chip(32, 32, seed=s) for s in range(2)]
    guides = [((8.0, 8.0, 16.0, 16.0), None)] * 2
    answers = [[((2.0, 2.0, 30.0, 30.0), None)]] * 2
    for threshold, status in ((1e-30, GUIDE_NOT_FOUND), (1.0, GUIDE_CONFIRMED)):
        describer.processor.guide_no_object_probability = threshold
        assert describer.guide_threshold == threshold
        results = describer.describe(chips, [box for ((box, _),) in answers], [None] * 2, description=False,
                                     guides=[[guide] for guide in guides])
        objects = [o for r in results for o in r.objects]
        assert all(0.0 < o.guide_no_object_p <= 1.0 for o in objects)
        # a guide the model itself answers "none" for is not found whatever the threshold
        assert {o.guide_status for o in objects if o.attributes.get("name") != NO_OBJECT_VALUE} == {status}


def test_first_token_floor_forbids_only_its_token_below_the_floor_at_the_first_step():
    scores = torch.log(torch.tensor([[0.1, 0.6, 0.3], [0.7, 0.2, 0.1]]))
    floor = FirstTokenFloor(token=0, floor=0.5)
    out = floor(torch.zeros(2, 0, dtype=torch.long), scores.clone())
    assert floor.probabilities == pytest.approx([0.1, 0.7])
    assert torch.isneginf(out[0]).tolist() == [True, False, False]     # 0.1 < 0.5: forbidden
    assert torch.isfinite(out[1]).all()                                  # 0.7 >= 0.5: the model's choice stands
    later = floor(torch.tensor([[1], [1]]), scores.clone())              # after the first token: never
    assert torch.isfinite(later).all() and floor.probabilities == pytest.approx([0.1, 0.7])


def test_region_no_object_floor_comes_from_the_model_folder_and_only_forbids(tiny_model_dir, tmp_path):
    """The region's attribute answer: `no_object_p` is the model's probability of the first word of
    "no distinct objects"; a floor above it forbids that word, and the answer is then the model's
    greedy answer with that one word forbidden (nothing picked by code)."""
    from mgimm_core.model.processing_mgimm import MGIMMProcessor
    from mgimm_core.prompts import ATTRIBUTE_PROMPT
    from mgimm_core.vocabulary import NO_OBJECT

    describer = Describer.load(tiny_model_dir, device="cpu", max_new_tokens=6, agree=False)
    tokenizer = describer.processor.tokenizer
    no = tokenizer(NO_OBJECT, add_special_tokens=False)["input_ids"][0]
    chips = [random_chip(32, 32, seed=s) for s in range(4)]
    boxes = [(2.0, 2.0, 30.0, 30.0)] * 4
    plain = describer.describe(chips, boxes, [None] * 4, description=False)
    assert all(0.0 <= r.no_object_p <= 1.0 for r in plain)
    # the random model rarely begins with "no": its own first word stands in for it, so the floor has
    # something to forbid
    patches = describer.patches(chips)
    regions = [[(box, None)] for box in boxes]
    first = [row[0] for row in describer.generate_ids(chips, regions, ATTRIBUTE_PROMPT, "region", patches)]
    recorder = FirstTokenFloor(first[0], 0.0)
    describer.generate_ids(chips, regions, ATTRIBUTE_PROMPT, "region", patches, floor=recorder)
    p = recorder.probabilities[0]
    assert 0.0 < p < 1.0
    for floor_value, kept in ((p / 2, True), (min(1.0, p * 1.5 + 1e-6), False)):
        floor = FirstTokenFloor(first[0], floor_value)
        rows = describer.generate_ids(chips, regions, ATTRIBUTE_PROMPT, "region", patches, floor=floor)
        assert (rows[0][0] == first[0]) is kept
    # the folder's setting is the floor the describe call uses (saved and read back)
    describer.processor.no_object_probability = 0.25
    describer.processor.save_pretrained(tmp_path)
    assert MGIMMProcessor.from_pretrained(tmp_path).no_object_probability == 0.25
    made = describer.no_object_floor()
    assert (made.token, made.floor) == (no, 0.25)
