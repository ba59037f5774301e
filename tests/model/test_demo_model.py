"""The shipped demo model, end to end through `mgimm-geo describe`: AOIs drawn in EPSG:4326 over a
UTM scene it has never seen (held-out seed), attributes compared with the ground truth under them."""


import pyogrio
import pytest
from click.testing import CliRunner

from batch.cli import cli
from mgimm_core.model_dir import DEMO_MODEL_DIR
from training.demo_recipe import HELDOUT_SEED_BASE
from training.synthetic.demo_inputs import TRUTH_PREFIX, write_demo_inputs


def test_demo_model_ships_in_the_package_and_is_small():
    files = {p.name: p.stat().st_size for p in DEMO_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(files)
    assert sum(files.values()) < 30 * 2**20


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_e2e")
    rows = []
    for seed in (HELDOUT_SEED_BASE + 500, HELDOUT_SEED_BASE + 501):
        inputs = write_demo_inputs(root / str(seed), seed=seed, size=1024, crs="EPSG:32633", objects=30)
        out = root / f"{seed}.gpkg"
        result = CliRunner().invoke(cli, ["describe", str(inputs.scene), "--aoi", str(inputs.aoi), "-o", str(out),
                                          "-q", "--batch-size", "16"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        meta, _fids, _geoms, values = pyogrio.raw.read(str(out), layer="regions")
        rows += [dict(zip(meta["fields"], row)) for row in zip(*values)]
    return rows


@pytest.mark.slow
def test_attributes_match_ground_truth_for_at_least_85_percent_of_aois(described):
    # Version 2 of the demo model gets 37 of 42 exactly (class, colour, shape); version 1 got at
    # least 38. Version 2 traded a little of it for answers that agree with its descriptions and
    # "no distinct objects" on empty regions (mgimm_core/demo_model/README.md).
    objects = [r for r in described if r["kind"] == "object"]
    assert len(objects) >= 40
    matches = [r["object"] == r[TRUTH_PREFIX + "name"] and r["color"] == r[TRUTH_PREFIX + "color"]
               and r["shape"] == r[TRUTH_PREFIX + "shape"] for r in objects]
    misses = [(r[TRUTH_PREFIX + "name"], r[TRUTH_PREFIX + "color"], r[TRUTH_PREFIX + "shape"],
               r["object"], r["color"], r["shape"]) for r, ok in zip(objects, matches) if not ok]
    assert sum(matches) / len(matches) >= 0.85, misses


def test_area_descriptions_are_fluent_and_name_objects(described):
    areas = [r for r in described if r["kind"] == "area"]
    assert areas
    for row in areas:
        text = row["description"]
        assert len(text.split()) >= 12 and text.rstrip().endswith(".")


def test_object_aoi_descriptions_name_the_object_under_them(described):
    """A region drawn around one object is described as that object in its surroundings (held-out
    figure at export: named in 88% of object-centred regions)."""
    from mgimm_core.vocabulary import plural

    objects = [r for r in described if r["kind"] == "object"]
    named = [r[TRUTH_PREFIX + "name"] in r["description"] or plural(r[TRUTH_PREFIX + "name"]) in r["description"]
             for r in objects]
    assert sum(named) / len(named) >= 0.75, [(r[TRUTH_PREFIX + "name"], r["description"]) for r in objects]
