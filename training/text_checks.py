"""The benchmark's text checks on any describe output: how many descriptions have a doubled word, a
broken phrase, a repeated clause, a list item repeated but for its count or a phrase doubled around
an "and" (training/benchmark.py).

The benchmark reads AOIs, which seldom hold a crowd; area descriptions of whole tiles list crowds,
where a model that cannot tell two groups apart lists the same group again. On the scenes a
benchmark run wrote to its --workdir:

    mgimm-geo describe WORKDIR/scene_*/scene.tif --tiles -o tiles.gpkg
    python -m training.text_checks tiles.gpkg [other.gpkg ...] [--world 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from training.benchmark import Grammar, doubled_phrases, doubled_words, repeated_clauses, repeated_items


def text_checks(texts: list[str], grammar: Grammar) -> dict[str, Any]:
    """Counts of descriptions with each fault, and their words, for `texts`."""
    return {"descriptions": len(texts), "words": sum(len(t.split()) for t in texts),
            "doubled_words": sum(bool(doubled_words(t)) for t in texts),
            "broken_phrases": sum(bool(grammar.broken(t)) for t in texts),
            "repeated_clauses": sum(bool(repeated_clauses(t)) for t in texts),
            "repeated_list_items": sum(bool(repeated_items(t)) for t in texts),
            "doubled_phrases": sum(bool(doubled_phrases(t)) for t in texts)}


def descriptions(path: str) -> list[str]:
    """The non-empty descriptions of a describe output's first layer (regions or tiles)."""
    import pyogrio

    layer = pyogrio.list_layers(path)[0][0]
    frame = pyogrio.read_dataframe(path, layer=layer, read_geometry=False, columns=["description"])
    return [text for text in frame["description"] if isinstance(text, str) and text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outputs", nargs="+", help="describe outputs (GeoPackage, ...)")
    parser.add_argument("--world", type=int, choices=(2, 3), default=3,
                        help="the world whose generator text defines a good word pair (broken phrases)")
    args = parser.parse_args(argv)
    grammar = Grammar.from_generator(world=args.world)
    report = {path: text_checks(descriptions(path), grammar) for path in args.outputs}
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
