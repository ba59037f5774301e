"""One training stage from a YAML config, on reference-format or project-format data.

    python -m training train training/configs/full_stage1.yaml
    python -m training train training/configs/full_stage2.yaml --resume

A config names the model to start from, the data, which parts train (explicit flags, defaults from
the stage preset) and the loop settings; see training/configs/*.yaml and docs/training.md.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
import yaml

from mgimm_core.errors import ModelError
from mgimm_core.model_formats import open_weight_permissions
from training.batches import example_from_sample, collate
from training.loop import LoopConfig, seed_everything, train

# The reference recipe (docs/training.md) as explicit flags per stage.
STAGE_PRESETS = {
    "region_alignment": dict(mode="region", train_region=True, train_projector=True, lora=False,
                             train_vision=False, train_lm=False, lr=1e-4, projector_lr=None),
    "description": dict(mode="global_region", train_region=True, train_projector=True, lora=True,
                        train_vision=False, train_lm=False, lr=2e-5, projector_lr=2e-6),
    "global_only": dict(mode="global", train_region=False, train_projector=True, lora=True,
                        train_vision=False, train_lm=False, lr=2e-5, projector_lr=2e-6),
}
TRAIN_KEYS = ("mode", "train_region", "train_projector", "lora", "train_vision", "train_lm", "lr",
              "projector_lr", "batch_size", "epochs", "max_steps")


class ConfigError(ModelError, ValueError):
    """A training config is missing a field or has a bad value."""


def load_config(path) -> dict:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the training config ({exc})") from exc
    for key in ("stage", "model", "data", "output"):
        if key not in config:
            raise ConfigError(f"{path}: missing '{key}' (see training/configs/ for complete examples)")
    if config["stage"] not in STAGE_PRESETS:
        raise ConfigError(f"{path}: stage {config['stage']!r} is not one of {', '.join(STAGE_PRESETS)}")
    base = Path(path).parent
    for section, key in (("data", "path"), ("data", "image_root"), ("model", "path"), ("model", "vision"),
                         ("model", "llm"), (None, "output")):
        holder = config if section is None else config[section]
        if holder.get(key) and not Path(holder[key]).is_absolute():
            holder[key] = str((base / holder[key]).resolve())
    return config


def build_model(model_cfg: dict):
    """(model, processor) from `init`: pretrained DIR (e.g. the previous stage), components
    (vision + LLM dirs), llava (a LLaVA-1.5 checkpoint at `path`, the reference's real starting
    point: its vision tower, projector and LM with a fresh region module; `vision` for an
    original-format one), or tiny (random, for tests). `overrides` set MGIMMConfig fields
    (for llava: the region-module settings)."""
    from mgimm_core.model import MGIMMForConditionalGeneration, MGIMMProcessor

    init = model_cfg.get("init", "pretrained")
    overrides = model_cfg.get("overrides", {}) or {}
    if init == "pretrained":
        model = MGIMMForConditionalGeneration.from_pretrained(model_cfg["path"])
        return model, MGIMMProcessor.from_pretrained(model_cfg["path"])
    if init == "components":
        from transformers import AutoTokenizer

        model = MGIMMForConditionalGeneration.from_components(vision=model_cfg["vision"], llm=model_cfg["llm"],
                                                               **overrides)
        tokenizer = AutoTokenizer.from_pretrained(model_cfg["llm"])  # local dir; no remote code
        return model, MGIMMProcessor.from_config(model.config, tokenizer)
    if init == "llava":
        from mgimm_core.model import from_llava

        model, processor = from_llava(model_cfg["path"], vision=model_cfg.get("vision"),
                                      region_settings=overrides or None)
        return model.train(), processor
    if init == "tiny":
        from mgimm_core.model.testing_mgimm import tiny_model, tiny_processor

        model = tiny_model(**overrides).train()
        return model, tiny_processor(model.config)
    raise ConfigError(f"model.init {init!r}: use pretrained, components, llava or tiny")


def load_examples(data_cfg: dict, kind: str):
    """Examples from the reference region file (stage 1), description file (stage 2) or JSONL."""
    from training.data import read_chip_records, read_description_file, read_region_file

    fmt = data_cfg.get("format", "reference")
    kw = dict(image_root=data_cfg.get("image_root"), on_bad=data_cfg.get("on_bad", "skip"))
    if fmt == "reference":
        reader = read_region_file if kind == "region" else read_description_file
        result = reader(data_cfg["path"], **kw)
    elif fmt == "jsonl":
        result = read_chip_records(data_cfg["path"], **kw)
    else:
        raise ConfigError(f"data.format {fmt!r}: use reference or jsonl")
    samples = result.regions if kind == "region" else result.descriptions
    limit = data_cfg.get("limit")
    samples = samples[:limit] if limit else samples
    if not samples:
        raise ConfigError(f"{data_cfg['path']}: no usable {kind} samples ({result.report.as_dict()})")
    return [example_from_sample(s, kind) for s in samples], result.report.as_dict()


def run_config(path, *, resume: bool = False) -> dict:
    """Train one stage as configured; save the model (adapters unmerged) and processor to output/model."""
    config = load_config(path)
    settings = {**STAGE_PRESETS[config["stage"]], **{k: v for k, v in (config.get("train") or {}).items()
                                                      if k in TRAIN_KEYS}}
    loop_fields = {f.name for f in fields(LoopConfig)}
    loop_settings = {k: v for k, v in (config.get("train") or {}).items() if k in loop_fields}
    seed_everything(int(loop_settings.get("seed", 0)))
    model, processor = build_model(config["model"])
    kind = "region" if settings["mode"] == "region" else "description"
    examples, report = load_examples(config["data"], kind)
    from mgimm_core.model import configure_trainable

    trainable = configure_trainable(model, train_region=settings["train_region"],
                                    train_projector=settings["train_projector"], lora=settings["lora"],
                                    train_vision=settings["train_vision"], train_lm=settings["train_lm"])
    batch_size = int(settings.get("batch_size") or 16)
    steps_per_epoch = max(1, len(examples) // batch_size)
    max_steps = int(settings.get("max_steps") or steps_per_epoch * int(settings.get("epochs") or 1))
    loop_settings["max_steps"] = max_steps
    cfg = LoopConfig(**loop_settings)
    projector = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("projector.")]
    others = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("projector.")]
    groups = [{"params": others, "lr": float(settings["lr"])}]
    if projector:
        groups.append({"params": projector, "lr": float(settings["projector_lr"] or settings["lr"])})
    mode = settings["mode"]
    seed = cfg.seed

    def batch_fn(step: int, micro: int) -> dict:
        rng = np.random.default_rng([seed, step, micro])
        picked = [examples[i] for i in rng.choice(len(examples), size=min(batch_size, len(examples)),
                                                     replace=False)]
        batch = dict(collate(processor, picked, mode))
        batch["mode"] = mode
        return batch

    out = Path(config["output"])
    device = config.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    result = train(model, groups, batch_fn, cfg, out, device=device, resume=resume)
    model.save_pretrained(str(out / "model"))
    processor.save_pretrained(str(out / "model"))
    open_weight_permissions(out / "model")
    summary = {"stage": config["stage"], "steps": result.steps, "final_loss": result.final_loss,
               "seconds": round(result.seconds, 1), "samples": result.samples, "data": report,
               "trainable_parameters": sum(p.numel() for g in groups for p in g["params"]),
               "trainable_tensors": len(trainable), "model": str(out / "model")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
