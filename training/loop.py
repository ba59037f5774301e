"""The optimisation loop shared by every training stage.

Stage-specific choices (which parameters train, their learning rates, which data) live in
`training.stages`; this module only steps an optimiser over batches, with gradient accumulation,
warmup + cosine decay, bf16 autocast on CUDA, periodic checkpoints and exact resume.

Resume is exact because batches are a pure function of the optimiser step (`batch_fn(step, micro)`),
so a resumed run sees the same samples it would have seen without the interruption.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint-last"


@dataclass
class LoopConfig:
    """How long and how to step; learning rates come with the parameter groups."""

    max_steps: int
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    log_every: int = 10
    checkpoint_every: int = 200
    seed: int = 0
    bf16: bool = True  # used on CUDA only; CPU trains in fp32
    extra: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    seconds: float
    samples: int
    log_path: Path


def lr_factor(step: int, total: int, warmup_ratio: float, min_ratio: float = 0.0) -> float:
    """Linear warmup then cosine decay to `min_ratio`; step counts optimiser steps from 0."""
    warmup = max(1, int(round(total * warmup_ratio)))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only what trains: frozen weights are rebuilt from the base model, not re-saved."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {n: t.detach().cpu().contiguous() for n, t in model.state_dict().items() if n in names}


def save_checkpoint(out_dir: Path, model, optimizer, step: int, losses: list[float]) -> Path:
    """Write trainable weights (safetensors) and optimiser state, then swap in atomically."""
    final = out_dir / CHECKPOINT_DIR
    tmp = out_dir / (CHECKPOINT_DIR + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(_trainable_state(model), str(tmp / "trainable.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "step": step,
                "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "recent_losses": losses[-50:]}))
    if final.exists():
        old = out_dir / (CHECKPOINT_DIR + ".old")
        final.rename(old)
        tmp.rename(final)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        tmp.rename(final)
    return final


def load_checkpoint(out_dir: Path, model, optimizer) -> int:
    """Restore a checkpoint written by `save_checkpoint`; returns the step to continue from."""
    ckpt = out_dir / CHECKPOINT_DIR
    state = load_file(str(ckpt / "trainable.safetensors"))
    missing = [n for n in state if n not in dict(model.named_parameters())]
    if missing:
        raise RuntimeError(f"{ckpt}: checkpoint has parameters this model lacks ({missing[:3]}...); "
                           "resume with the same configuration or start a new --out directory")
    model.load_state_dict(state, strict=False)
    extra = torch.load(ckpt / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    torch.set_rng_state(extra["torch_rng"])
    return int(extra["step"])


def _move(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def train(model: torch.nn.Module, param_groups: list[dict], batch_fn: Callable[[int, int], dict],
          cfg: LoopConfig, out_dir: str | Path, *, device: str | torch.device = "cpu",
          resume: bool = False, progress: bool = True, until_step: int | None = None
          ) -> TrainResult:
    """Optimise `model` for `cfg.max_steps` steps.

    param_groups: torch optimiser groups, each with its own "lr" (the peak learning rate).
    batch_fn(step, micro): the micro-batch `micro` (0..grad_accum-1) of optimiser step `step`, a dict
        of tensors accepted by `model(**batch)`, whose output has `.loss`.
    until_step: stop after this step (a time-boxed chunk); the schedule still spans max_steps and a
        later call with resume=True continues exactly.
    Logs one JSON line per `log_every` steps to out_dir/train_log.jsonl and draws loss_curve.svg.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    model.to(device)
    model.train()
    for group in param_groups:
        group.setdefault("weight_decay", cfg.weight_decay)
        group["peak_lr"] = group["lr"]
    optimizer = torch.optim.AdamW(param_groups, betas=(0.9, 0.95))
    log_path = out_dir / "train_log.jsonl"
    start_step = 0
    if resume and (out_dir / CHECKPOINT_DIR).exists():
        start_step = load_checkpoint(out_dir, model, optimizer)
        log.info("resumed from %s at step %d", out_dir / CHECKPOINT_DIR, start_step)
    else:
        seed_everything(cfg.seed)
        log_path.write_text("")
    use_bf16 = cfg.bf16 and device.type == "cuda"
    losses: list[float] = []
    samples = 0
    t0 = time.perf_counter()
    bar = _progress_bar(cfg.max_steps, start_step, progress)
    loss_value = float("nan")
    last_step = cfg.max_steps if until_step is None else min(until_step, cfg.max_steps)
    for step in range(start_step, last_step):
        factor = lr_factor(step, cfg.max_steps, cfg.warmup_ratio, cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for micro in range(cfg.grad_accum):
            batch = _move(batch_fn(step, micro), device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = model(**batch).loss / cfg.grad_accum
            loss.backward()
            step_loss += float(loss.detach())
            samples += _batch_size(batch)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
        optimizer.step()
        loss_value = step_loss
        losses.append(step_loss)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}")
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.max_steps:
            elapsed = time.perf_counter() - t0
            window = losses[-cfg.log_every:]
            entry = {"step": done, "loss": sum(window) / len(window),
                     "lr": optimizer.param_groups[0]["lr"], "elapsed_s": round(elapsed, 2),
                     "samples_per_s": round(samples / max(elapsed, 1e-9), 2)}
            with log_path.open("a") as fh:
                fh.write(json.dumps(entry) + "\n")
        if done % cfg.checkpoint_every == 0 or done in (cfg.max_steps, last_step):
            save_checkpoint(out_dir, model, optimizer, done, losses)
    if bar is not None:
        bar.close()
    write_loss_curve(log_path, out_dir / "loss_curve.svg")
    (out_dir / "loop_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return TrainResult(steps=last_step, final_loss=loss_value,
                       seconds=time.perf_counter() - t0, samples=samples, log_path=log_path)


def _batch_size(batch: dict) -> int:
    for value in batch.values():
        if torch.is_tensor(value) and value.dim() > 0:
            return int(value.shape[0])
    return 0


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


def write_loss_curve(log_path: Path, svg_path: Path, width: int = 640, height: int = 320) -> None:
    """Plot the logged loss as a dependency-free SVG polyline (log-scaled y)."""
    entries = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    points = [(e["step"], e["loss"]) for e in entries if e.get("loss", 0) > 0]
    if len(points) < 2:
        return
    steps = [p[0] for p in points]
    logs = [math.log10(p[1]) for p in points]
    x0, x1, y0, y1 = min(steps), max(steps), min(logs), max(logs)
    pad = 40

    def sx(v):
        return pad + (v - x0) / max(x1 - x0, 1e-9) * (width - 2 * pad)

    def sy(v):
        return height - pad - (v - y0) / max(y1 - y0, 1e-9) * (height - 2 * pad)

    poly = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in zip(steps, logs))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
           f'<rect width="100%" height="100%" fill="white"/>'
           f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{poly}"/>'
           f'<text x="{pad}" y="20" font-size="12">loss (log10) {10**y1:.3g} .. {10**y0:.3g}, '
           f'steps {x0}..{x1}</text></svg>')
    svg_path.write_text(svg)
