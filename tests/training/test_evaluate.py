"""Evaluation: COCO caption metrics on hand-made sets with known answers, attribute accuracy, CLI.

Most tests use the pure-Python tokenizer and scorers (BLEU, ROUGE-L, CIDEr) to stay fast; one test
runs the Java tools (PTB tokenizer, METEOR) for real.
"""

import json
import math
import subprocess
import sys

import pytest

from training.evaluate import (CAPTION_METRICS, EvaluationError, attribute_accuracy,
                               evaluate_captions, java_unavailable_reason, load_predictions,
                               load_references, main, spice_unavailable_reason)

FAST = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"]

REFS = {
    1: ["a red rectangular building next to a narrow road"],
    2: ["two white round storage tanks beside the harbour"],
    3: ["a green tennis court surrounded by tall trees"],
    4: ["a large ship sailing on the dark blue sea"],
}
UNRELATED = {1: "dry brown farmland parcels", 2: "an airplane parked at the airport",
             3: "grey vehicles in a parking lot", 4: "a bridge crosses over the river"}


def test_bleu1_matches_hand_computation():
    # 3 hypothesis words, all in the 6-word reference: precision 1, brevity penalty exp(1 - 6/3).
    scores = evaluate_captions({"x": "a red building"}, {"x": ["a red building near the road"]},
                               metrics=["BLEU-1"], tokenizer="simple")
    assert scores["BLEU-1"] == pytest.approx(math.exp(-1), abs=1e-6)
    # Same length, 2 of 3 words right: 2/3, no brevity penalty.
    scores = evaluate_captions({"x": "a red car"}, {"x": ["a blue car"]},
                               metrics=["BLEU-1"], tokenizer="simple")
    assert scores["BLEU-1"] == pytest.approx(2 / 3, abs=1e-6)


def test_identical_captions_outscore_unrelated_ones():
    identical = {k: v[0] for k, v in REFS.items()}
    good = evaluate_captions(identical, REFS, metrics=FAST, tokenizer="simple")
    bad = evaluate_captions(UNRELATED, REFS, metrics=FAST, tokenizer="simple")
    assert good["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert good["ROUGE-L"] == pytest.approx(1.0)
    assert good["CIDEr"] > 5.0 and bad["CIDEr"] < 0.1
    assert bad["BLEU-4"] < 0.01
    assert good["count"] == 4 and good["tokenizer"] == "simple"


def test_partly_right_captions_rank_between():
    partly = {1: "a red building next to a road", 2: "two white tanks beside the harbour",
              3: UNRELATED[3], 4: UNRELATED[4]}
    identical = evaluate_captions({k: v[0] for k, v in REFS.items()}, REFS, metrics=FAST,
                                  tokenizer="simple")
    middle = evaluate_captions(partly, REFS, metrics=FAST, tokenizer="simple")
    unrelated = evaluate_captions(UNRELATED, REFS, metrics=FAST, tokenizer="simple")
    for key in ("BLEU-1", "ROUGE-L", "CIDEr"):
        assert identical[key] > middle[key] > unrelated[key], key


def test_ids_must_match_between_predictions_and_references():
    with pytest.raises(EvaluationError, match=r"have no prediction, e.g. \['4'\]"):
        evaluate_captions({1: "a", 2: "b", 3: "c"}, REFS, metrics=["BLEU-1"], tokenizer="simple")
    with pytest.raises(EvaluationError, match=r"have no reference, e.g. \['9'\]"):
        evaluate_captions(dict(UNRELATED, **{"9": "x"}), REFS, metrics=["BLEU-1"],
                          tokenizer="simple")
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_captions(UNRELATED, REFS, metrics=["BLEU-5"], tokenizer="simple")


def test_int_and_text_ids_are_the_same_image():
    scores = evaluate_captions({str(k): v for k, v in UNRELATED.items()}, REFS,
                               metrics=["BLEU-1"], tokenizer="simple")
    assert scores["count"] == 4


needs_java = pytest.mark.skipif(java_unavailable_reason() is not None, reason="needs Java")


@needs_java
def test_ptb_tokenizer_ignores_case_punctuation_and_newlines():
    """Real Stanford PTB tokenizer (Java, well under a second here)."""
    noisy = {1: "A Red, rectangular building next to a narrow road.", 2: REFS[2][0].upper(),
             3: "a green tennis court\nsurrounded by tall trees!", 4: "a large ship sailing on "
             "the dark-blue sea"}
    scores = evaluate_captions(noisy, REFS, metrics=FAST)
    assert scores["tokenizer"] == "ptb"
    # PTB keeps "dark-blue" as one token, so only id 4 differs from its reference.
    assert 0.8 < scores["BLEU-4"] < 1.0
    clean = evaluate_captions({**{k: v[0] for k, v in REFS.items()}, 4: noisy[4]}, REFS,
                              metrics=FAST)
    assert scores == clean


@needs_java
def test_ptb_tokenizer_handles_an_empty_prediction():
    scores = evaluate_captions({**UNRELATED, 4: ""}, REFS, metrics=["BLEU-1", "CIDEr"])
    assert scores["count"] == 4 and scores["CIDEr"] < 0.1


@pytest.mark.slow
@needs_java
@pytest.mark.slow
def test_all_metrics_with_meteor_and_spice_status():
    """Every metric through the Java tools; METEOR alone takes 10-20 s here (it loads its
    paraphrase table). SPICE is a number when its CoreNLP jars are installed, else null + reason."""
    identical = evaluate_captions({k: v[0] for k, v in REFS.items()}, REFS)
    assert set(CAPTION_METRICS) <= set(identical)
    assert identical["METEOR"] == pytest.approx(1.0, abs=1e-6)
    reason = spice_unavailable_reason()
    if reason is None:
        assert isinstance(identical["SPICE"], float)
    else:
        assert identical["SPICE"] is None and identical["unavailable"]["SPICE"] == reason


def simple_parse(text):
    """A stand-in for mgimm_core.vocabulary.parse_attributes over a tiny vocabulary."""
    vocab = {"name": {"building", "tank", "vehicle"}, "color": {"red", "white", "grey"},
             "shape": {"rectangular", "round", "square"}, "size": {"small", "large"}}
    words = text.lower().split()
    return {k: next((w for w in words if w in vs), None) for k, vs in vocab.items()}


def test_attribute_accuracy_per_attribute():
    preds = {"a": "red rectangular building", "b": "white square tank", "c": "grey round vehicle",
             "d": "red round building"}
    gt = {"a": {"name": "building", "color": "red", "shape": "rectangular"},
          "b": {"name": "tank", "colour": "White", "shape": "round"},
          "c": {"name": "vehicle", "colour": "grey", "shape": "round"},
          "d": {"name": "building", "colour": "white", "shape": "round"}}
    acc = attribute_accuracy(preds, gt, parse=simple_parse)
    assert acc["name"] == 1.0
    assert acc["color"] == 0.75  # "colour" key and capitals in the truth still count
    assert acc["shape"] == 0.75
    assert acc["all"] == 0.5
    assert "size" not in acc and acc["support"] == {"name": 4, "color": 4, "shape": 4}
    assert acc["count"] == 4


def test_attribute_accuracy_scores_size_only_where_present_and_takes_sequences():
    acc = attribute_accuracy(["large red building", "white tank"],
                             [{"name": "building", "size": "large"},
                              {"name": "tank", "size": "small"}], parse=simple_parse)
    assert acc["size"] == 0.5 and acc["name"] == 1.0 and acc["support"]["size"] == 2
    with pytest.raises(EvaluationError, match="matching order"):
        attribute_accuracy(["x"], [], parse=simple_parse)
    with pytest.raises(EvaluationError, match="no prediction"):
        attribute_accuracy({}, {"a": {"name": "tank"}}, parse=simple_parse)


def test_attribute_accuracy_default_parser_is_the_project_vocabulary():
    # mgimm_core.vocabulary.parse_attributes reads canonical stage-1 answers (and "gray").
    acc = attribute_accuracy(
        ["a small white circular storage tank in the upper left", "a large gray elongated ship"],
        [{"name": "storage tank", "color": "white", "shape": "circular", "size": "small"},
         {"name": "ship", "colour": "grey", "shape": "rectangular", "size": "large"}])
    assert acc["name"] == 1.0 and acc["color"] == 1.0 and acc["size"] == 1.0
    assert acc["shape"] == 0.5 and acc["all"] == 0.5


def test_attribute_accuracy_without_a_parser_says_how_to_pass_one(monkeypatch):
    # Simulates an install where mgimm_core.vocabulary cannot be imported.
    monkeypatch.setitem(sys.modules, "mgimm_core.vocabulary", None)
    with pytest.raises(EvaluationError, match="pass parse="):
        attribute_accuracy(["red building"], [{"name": "building"}])


def test_loaders_read_reference_code_formats(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"question_id": 1, "text": "a"}\n{"question_id": 2, "text": "b"}\n')
    assert load_predictions(answers) == {"1": "a", "2": "b"}
    coco_results = tmp_path / "res.json"
    coco_results.write_text(json.dumps([{"image_id": 1, "caption": "a"},
                                        {"image_id": 1, "caption": "b"}]))
    with pytest.raises(EvaluationError, match="predicted twice"):
        load_predictions(coco_results)
    desc = tmp_path / "desc.json"
    desc.write_text(json.dumps([{"image_id": 3, "conversations": [
        {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "A port."}]}]))
    assert load_references(desc) == {"3": ["A port."]}


def write_cli_inputs(tmp_path):
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{"image_id": k, "caption": v[0]} for k, v in REFS.items()]))
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({
        "images": [{"id": k} for k in REFS],
        "annotations": [{"image_id": k, "id": k, "caption": v[0]} for k, v in REFS.items()]}))
    return pred, ref


def test_cli_writes_metrics_json(tmp_path):
    pred, ref = write_cli_inputs(tmp_path)
    attrs = tmp_path / "attrs.json"
    attrs.write_text(json.dumps({"1": {"name": "building", "colour": "red"}}))
    out = tmp_path / "metrics.json"
    args = ["--pred", str(pred), "--ref", str(ref), "-o", str(out), "--tokenizer", "simple",
            "--metrics", "BLEU-4,CIDEr"]
    assert main(args + ["--attrs", str(attrs)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["captions"]["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["captions"]["count"] == 4
    assert metrics["attributes"]["name"] == 1.0 and metrics["attributes"]["color"] == 1.0
    assert metrics["attributes"]["count"] == 1
    assert metrics["pycocoevalcap"]


def test_cli_module_entry_reports_errors_with_exit_1(tmp_path):
    pred, ref = write_cli_inputs(tmp_path)
    pred.write_text(json.dumps([{"image_id": 1, "caption": "a"}]))
    run = subprocess.run([sys.executable, "-m", "training.evaluate", "--pred", str(pred),
                          "--ref", str(ref), "--tokenizer", "simple", "--metrics", "BLEU-1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "have no prediction" in run.stderr
