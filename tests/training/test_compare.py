"""Paired comparison of two benchmark reports (training/compare.py): the per-scene counts a report
keeps give back its figures, a difference every scene agrees on is called, one that rests on a
single scene is not, and reports of different scenes are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.benchmark import SPLITS, Grammar, Tally, draw_regions, report, score_case
from training.compare import compare, main


def _scene(named_right: int, regions: int = 4) -> dict:
    """One scene's counts: `regions` single-object AOIs, `named_right` of them named right."""
    return {"n": {"described": regions, "attribute_regions": regions, "attr_name": named_right,
                  "desc_names_true": named_right}, "tiles": {}}


def _report(path, scenes: dict[str, dict]):
    path.write_text(json.dumps({"split": "dev", "results": {"free": {"scene_counts": scenes}}}))
    return str(path)


def test_scene_counts_give_back_the_reports_figures():
    from training.synthetic.scene import generate_scene

    tally = Tally()
    for seed in SPLITS["dev"][1:3]:
        scene = generate_scene(seed, size=512)
        regions = draw_regions(scene, np.random.default_rng(seed))
        rows = {r.id: {"description": f"There is one {r.target.name}.", "object": r.target.name,
                       "color": None, "shape": None, "size": None}
                for r in regions if r.target is not None}
        before = tally.snapshot()
        score_case(regions, {"unguided": (rows, {})}, tally, Grammar())
        tally.add_scene(seed, before)
    whole = report(tally)
    assert len(whole["scene_counts"]) == 2
    again = report(Tally.from_scenes(list(whole["scene_counts"].values())))
    for key in ("attribute_name_right", "invented_objects", "no_object_answer_recall", "dominant_cover_named",
                "unguided_recall", "unguided_precision", "broken_phrases"):
        assert again[key] == whole[key], key
    assert again["attribute_regions"] == whole["attribute_regions"] > 0


def test_a_difference_every_scene_shows_is_called_and_one_scene_is_not():
    seeds = [str(s) for s in range(20)]
    a = {s: _scene(1) for s in seeds}
    better = {s: _scene(3) for s in seeds}
    called = compare(a, better, resamples=300)["figures"]["attribute_name_right"]
    assert called["difference"] == 0.5 and called["verdict"] == "B better"
    assert 0 < called["interval"][0] <= called["interval"][1]
    # the same total gain, all from one scene: resamples without that scene show none
    one = dict(a, **{"0": _scene(4, regions=4)})
    lucky = compare(a, one, resamples=300)["figures"]["attribute_name_right"]
    assert lucky["difference"] > 0 and lucky["verdict"] == "no clear difference" and lucky["interval"][0] == 0
    same = compare(a, a, resamples=300)["figures"]["attribute_name_right"]
    assert same["difference"] == 0 and same["interval"] == [0, 0] and same["verdict"] == "no clear difference"
    # lower is better for invented objects
    invented = {s: {"n": dict(_scene(1)["n"], invented=2), "tiles": {}} for s in seeds}
    assert compare(a, invented, resamples=300)["figures"]["invented_objects"]["verdict"] == "B worse"


def test_reports_of_different_scenes_or_without_scene_counts_are_refused(tmp_path, capsys):
    a = _report(tmp_path / "a.json", {"1": _scene(1), "2": _scene(2)})
    b = _report(tmp_path / "b.json", {"1": _scene(1), "3": _scene(2)})
    assert main([a, b]) == 2
    err = capsys.readouterr().err
    assert "different scenes" in err and "a.json" in err and "b.json" in err
    assert main([a, str(tmp_path / "missing.json")]) == 2
    assert "missing.json: cannot be read" in capsys.readouterr().err
    assert main([a, a, "--out", str(tmp_path / "no" / "such" / "folder.json")]) == 2
    assert "--out" in capsys.readouterr().err
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"results": {"free": {"attribute_name_right": 0.5}}}))
    assert main([a, str(old)]) == 2
    err = capsys.readouterr().err
    assert "old.json" in err and "per-scene counts" in err
    assert main([a, a, "--resamples", "200"]) == 0
    assert "attribute_name_right" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([a, a, "--resamples", "5"])
