"""training.text_checks: the benchmark's text checks read back from a real describe output layer."""

from __future__ import annotations

import geopandas as gpd
import pyogrio
import shapely

from training.benchmark import Grammar
from training.text_checks import descriptions, text_checks

GROUP = "white rectangular buildings scattered across the image"
TEXTS = [
    "This aerial image shows a built-up area. There are 30 buildings.",
    f"There are 30 buildings. These are seventeen {GROUP}, twelve {GROUP} and one other building.",
    "Farmland parcels cover the north; farmland parcels cover the north.",
    "A building in in the centre.",
    "Two buildings stand in the lower left and the lower left.",
]


def test_counts_each_fault_once_per_description_from_the_output_layer(tmp_path):
    path = tmp_path / "tiles.gpkg"
    frame = gpd.GeoDataFrame({"description": TEXTS + [None]}, geometry=[shapely.box(0, 0, 1, 1)] * 6,
                             crs="EPSG:4326")
    pyogrio.write_dataframe(frame, path, layer="tiles")
    texts = descriptions(str(path))
    assert texts == TEXTS                                     # the empty row (a failed region) is left out
    grammar = Grammar()
    for text in TEXTS[:3]:
        grammar.add(text)                                    # their word pairs are good; "in in" is not
    checks = text_checks(texts, grammar)
    assert checks == {"descriptions": 5, "words": sum(len(t.split()) for t in TEXTS), "doubled_words": 1,
                      "broken_phrases": 2, "repeated_clauses": 1, "repeated_list_items": 1, "doubled_phrases": 1}
