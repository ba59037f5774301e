"""The shared optimisation loop: schedule, accumulation, checkpoint and exact resume."""

import json
from types import SimpleNamespace

import pytest
import torch

from training.loop import LoopConfig, lr_factor, train


class TinyRegressor(torch.nn.Module):
    """A real (tiny) model: the loop only needs `model(**batch).loss`."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.frozen = torch.nn.Linear(4, 1)
        self.frozen.requires_grad_(False)

    def forward(self, x, y):
        return SimpleNamespace(loss=torch.nn.functional.mse_loss(self.layer(x) + 0 * self.frozen(x), y))


def batch_fn(step, micro):
    g = torch.Generator().manual_seed(step * 100 + micro)
    x = torch.randn(8, 4, generator=g)
    return {"x": x, "y": x.sum(dim=1, keepdim=True)}


def make(seed=0):
    torch.manual_seed(seed)
    model = TinyRegressor()
    return model, [{"params": [p for p in model.parameters() if p.requires_grad], "lr": 0.05}]


def test_lr_factor_warms_up_then_decays_to_min():
    assert lr_factor(0, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(99, 100, 0.1, 0.1) == pytest.approx(0.1, abs=0.01)
    assert lr_factor(50, 100, 0.1) < lr_factor(20, 100, 0.1)


def test_loss_decreases_and_log_and_curve_are_written(tmp_path):
    model, groups = make()
    cfg = LoopConfig(max_steps=40, grad_accum=2, log_every=10, checkpoint_every=20)
    result = train(model, groups, batch_fn, cfg, tmp_path, progress=False)
    entries = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [10, 20, 30, 40]
    assert entries[-1]["loss"] < entries[0]["loss"] / 5
    assert result.samples == 40 * 2 * 8
    assert (tmp_path / "loss_curve.svg").read_text().startswith("<svg")
    assert (tmp_path / "checkpoint-last" / "trainable.safetensors").exists()


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    model_a, groups_a = make()
    train(model_a, groups_a, batch_fn, LoopConfig(max_steps=12, checkpoint_every=4), tmp_path / "a",
          progress=False)

    # "Interrupted" run: stops at step 8 (its last checkpoint), then a fresh model resumes.
    model_b, groups_b = make()
    train(model_b, groups_b, batch_fn, LoopConfig(max_steps=12, checkpoint_every=4), tmp_path / "b",
          progress=False, until_step=8)
    model_c, groups_c = make(seed=123)  # different init: the checkpoint must overwrite it
    train(model_c, groups_c, batch_fn, LoopConfig(max_steps=12, checkpoint_every=4),
          tmp_path / "b", resume=True, progress=False)
    for pa, pc in zip(model_a.parameters(), model_c.parameters()):
        if pa.requires_grad:
            assert torch.allclose(pa, pc, atol=1e-6)
