"""The shared attribute vocabulary: canonical phrases and their parsing round-trip."""

import itertools

import pytest

from mgimm_core import vocabulary as v


def test_dior_has_twenty_classes_and_building_is_extra():
    assert len(v.DIOR_CLASSES) == 20
    assert "storage tank" in v.CLASS_NAMES and "building" in v.CLASS_NAMES


def test_phrase_round_trips_for_every_class_and_attribute():
    for name, color, shape in itertools.product(v.CLASS_NAMES, v.COLORS, v.SHAPES):
        attrs = {"name": name, "color": color, "shape": shape, "size": "medium",
                 "orientation": "northeast-southwest", "position": "centre left"}
        assert v.parse_attributes(v.attribute_phrase(attrs)) == attrs


def test_every_size_position_orientation_round_trips():
    for size, pos, ori in itertools.product(v.SIZES, v.POSITIONS, v.ORIENTATIONS + (None,)):
        attrs = {"name": "ship", "color": "grey", "shape": "elongated", "size": size,
                 "orientation": ori, "position": pos}
        assert v.parse_attributes(v.attribute_phrase(attrs)) == attrs


def test_canonical_phrase_form():
    assert v.attribute_phrase({"name": "storage tank", "color": "white", "shape": "circular",
                               "size": "small", "position": "upper left"}) == \
        "a small white circular storage tank in the upper left"
    assert v.attribute_phrase({"name": "building", "shape": "L-shaped"}) == "an L-shaped building"


def test_parse_is_robust_to_extra_words_plurals_and_spellings():
    got = v.parse_attributes("I think there are two big gray L shaped buildings near the center.")
    assert got == {"name": "building", "color": "grey", "shape": "L-shaped", "size": "large",
                   "orientation": None, "position": "centre"}
    assert v.parse_attributes("ground track fields")["name"] == "ground track field"
    assert v.parse_attributes("nothing here") == dict.fromkeys(v.ATTRIBUTE_KEYS)


def test_unknown_value_is_rejected_with_the_allowed_values():
    with pytest.raises(ValueError, match="color='purple'.*white"):
        v.attribute_phrase({"name": "ship", "color": "purple"})


def test_counts_positions_orientations():
    assert v.count_phrase(3, "building", "red rectangular") == "three red rectangular buildings"
    assert v.count_phrase(1, "storage tank") == "one storage tank"
    assert v.count_phrase(25, "vehicle") == "25 vehicles"
    assert v.plural("overpass") == "overpasses"
    assert v.position_of(10, 10, 300, 300) == "upper left"
    assert v.position_of(150, 290, 300, 300) == "lower centre"
    assert v.orientation_of(0) == v.orientation_of(180) == "north-south"
    assert v.orientation_of(90) == "east-west"
    assert v.orientation_of(45) == "northeast-southwest"
    assert v.orientation_of(135) == "northwest-southeast"
