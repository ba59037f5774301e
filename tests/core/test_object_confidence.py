"""How sure the model was of the class it named (`object_p`): the teacher-forced probability of the
words naming the class in its attribute answer, for the region's answer and each guide object's,
taken after the agreement; written to the regions layer as a column added when first used."""

from __future__ import annotations

import math

import pytest

from mgimm_core import steps
from mgimm_core.answers import RegionText
from mgimm_core.describer import Describer
from mgimm_core.model.testing_mgimm import random_chip
from mgimm_core.output.schema import RegionRecord, RegionSchema
from mgimm_core.prompts import ATTRIBUTE_PROMPT
from mgimm_core.vocabulary import attribute_term, parse_attributes

BOX = (2.0, 2.0, 30.0, 30.0)


def test_span_tokens_cut_after_the_words_before_on_word_level_and_byte_level_bpe(tiny_model_dir):
    """The span's tokens continue the tokens before it, for the demo's word-level vocabulary and a
    byte-level BPE one (Qwen's pre-tokenizer: the space before a word belongs to its token)."""
    from mgimm_core.describer import span_tokens
    from mgimm_core.model.processing_mgimm import MGIMMProcessor
    from mgimm_core.model.testing_qwen import qwen_tokenizer

    text = "a small red car near the road"
    for tokenizer in (MGIMMProcessor.from_pretrained(tiny_model_dir).tokenizer, qwen_tokenizer()):
        ids, n = span_tokens(tokenizer, text, (12, 15))
        assert tokenizer.decode(ids) == "a small red car"
        assert tokenizer.decode(ids[:-n]) == "a small red" and tokenizer.decode(ids[-n:]).strip() == "car"
        assert span_tokens(tokenizer, text, (12, 12)) is None              # nothing to score


def test_attribute_term_is_what_parse_attributes_reads_and_where():
    text = "A small red rectangular storage tank in the centre"
    value, start, end = attribute_term(text, "name")
    assert value == parse_attributes(text)["name"] == "storage tank"
    assert text[start:end] == "storage tank"
    assert attribute_term("a big grey tank", "name") == ("storage tank", 11, 15)   # a synonym, where it stands
    assert attribute_term("no distinct objects", "name") is None
    # the span indexes the text as given, also where lower-casing would change its length
    text = "İİ a small red car"
    value, start, end = attribute_term(text, "name")
    assert (value, text[start:end]) == ("vehicle", "car")


@pytest.fixture(scope="module")
def describer(tiny_model_dir):
    return Describer.load(tiny_model_dir, device="cpu", max_new_tokens=6, agree=False)


def _probability(describer, chip, patches, words_before: str, words: str) -> float:
    """exp of `score` on the tokens of `words` after `words_before`, the tokens picked by hand."""
    tokenizer = describer.processor.tokenizer
    before = tokenizer(words_before, add_special_tokens=False)["input_ids"]
    said = tokenizer(words, add_special_tokens=False)["input_ids"]
    total = describer.score([chip], [[(BOX, None)]], ATTRIBUTE_PROMPT, "region", patches, [before + said], [len(said)])
    return math.exp(total[0])


def test_word_probabilities_score_the_span_tokens_after_the_words_before(describer):
    chip = random_chip(32, 32, seed=3)
    patches = describer.patches([chip])
    text = "a small red car near the road"
    p = describer.word_probabilities([chip], [[(BOX, None)]], [ATTRIBUTE_PROMPT], "region", patches, [text],
                                     [(12, 15)])[0]
    assert p == pytest.approx(_probability(describer, chip, patches, "a small red", "car"), rel=1e-5)
    assert 0.0 < p < 1.0
    # two words: the chain rule over their tokens, each scored after the words before it
    both = describer.word_probabilities([chip], [[(BOX, None)]], [ATTRIBUTE_PROMPT], "region", patches, [text],
                                        [(8, 15)])[0]
    assert both == pytest.approx(_probability(describer, chip, patches, "a small", "red")
                                 * _probability(describer, chip, patches, "a small red", "car"), rel=1e-4)
    assert both < p
    # no span, an empty span: nothing to score
    assert describer.word_probabilities([chip, chip], [[(BOX, None)]] * 2, [ATTRIBUTE_PROMPT] * 2, "region",
                                        patches[[0, 0]], [text, text], [None, (12, 12)]) == [None, None]


def _state(describer, answers: list[str], guides: list[list[str]]):
    """A describe state after the questions, with the attribute answers given as if the model said them."""
    chips = [random_chip(32, 32, seed=s) for s in range(len(answers))]
    results = []
    for answer, guide_answers in zip(answers, guides):
        result = RegionText()
        describer.set_attributes(result, answer)
        for text in guide_answers:
            obj = RegionText()
            describer.set_attributes(obj, text)
            result.objects.append(obj)
        results.append(result)
    guide_regions = [[((4.0, 4.0, 12.0, 12.0), None)] * len(g) for g in guides]
    return steps.DescribeState(images=chips, regions=[[(BOX, None)] for _ in chips], guides=guide_regions,
                               patches=describer.patches(chips), questions=describer.questions, attributes=True,
                               prompt="describe", results=results, answers=results, gsds=[None] * len(chips))


def test_score_objects_sets_object_p_for_named_classes_only(describer):
    state = _state(describer, ["a small red car near the road", "no distinct objects", "a big grey tank"],
                   [[], ["a white house", "a red ship"], []])
    steps.score_objects(describer, state)
    car, empty, tank = state.results
    assert car.object_p == pytest.approx(_probability(describer, state.images[0], state.patches[[0]],
                                                      "a small red", "car"), rel=1e-5)
    assert tank.object_p == pytest.approx(_probability(describer, state.images[2], state.patches[[2]],
                                                       "a big grey", "tank"), rel=1e-5)
    assert empty.object_p is None                    # "no distinct objects": no_object_p is its measure
    house, ship = empty.objects                      # "house" is no class of the vocabulary: not scored
    assert house.object_p is None and 0.0 < ship.object_p < 1.0
    # a guide object is scored on its own region (the guide), not the chip's region
    tokenizer = describer.processor.tokenizer
    total = describer.score([state.images[1]], [[((4.0, 4.0, 12.0, 12.0), None)]], ATTRIBUTE_PROMPT, "region",
                            state.patches[[1]], [tokenizer("a red ship", add_special_tokens=False)["input_ids"]], [1])
    assert ship.object_p == pytest.approx(math.exp(total[0]), rel=1e-5)


def test_a_box_text_model_scores_the_class_under_the_question_it_was_asked(tmp_path):
    """The LLaVA-1.5 line (the region as box text in the question, mode "global") gets object_p too:
    the class words teacher-forced after the attribute question with its box written in."""
    from mgimm_core.model.testing_llava import write_llava_hf

    directory, _ = write_llava_hf(tmp_path / "llava")
    llava = Describer.load(directory, device="cpu", max_new_tokens=4, agree=False)
    assert not llava.questions.region_tokens and steps.score_objects in llava.steps(attributes=True, description=True, guides=False)
    chip = random_chip(40, 52, seed=1)
    state = steps.DescribeState(images=[chip], regions=[[(BOX, None)]], guides=[[]], patches=llava.patches([chip]),
                                questions=llava.questions, attributes=True, prompt="describe", results=[RegionText()],
                                answers=[], gsds=[None])
    llava.set_attributes(state.results[0], "a small red car near the road")
    steps.score_objects(llava, state)
    tokenizer = llava.processor.tokenizer
    before = tokenizer("a small red", add_special_tokens=False)["input_ids"]
    said = tokenizer(" car", add_special_tokens=False)["input_ids"]
    total = llava.score([chip], [[(BOX, None)]], llava.questions.attribute, "global", state.patches, [before + said],
                        [len(said)])
    assert state.results[0].object_p == pytest.approx(math.exp(total[0]), rel=1e-5)


def test_object_p_is_scored_last_and_reaches_the_row(describer):
    chosen = describer.steps(attributes=True, description=True, guides=True)
    assert chosen[-1] is steps.score_objects                       # after the agreement may re-decode
    assert steps.score_objects not in describer.steps(attributes=False, description=True, guides=False)
    schema = RegionSchema()
    row = schema.row(RegionRecord(scene="s", region_id="1", geometry=None, crs=None, object_p=0.25), "run")
    assert row["object_p"] == 0.25
    assert "object_p" not in schema.row(RegionRecord(scene="s", region_id="2", geometry=None, crs=None), "run")
