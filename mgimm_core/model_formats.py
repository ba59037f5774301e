"""Which kind of model a directory holds, read from its JSON files alone (no torch import).

Four kinds load as models (`mgimm_core.model.llava_mgimm` turns the LLaVA ones into MGIMM's
global-only mode with the region given as text):

- "mgimm": written by this project (`model_type` "mgimm"), including reference imports;
- "llava-hf": a Hugging Face `LlavaForConditionalGeneration` directory (`model_type` "llava" with
  `vision_config` / `text_config`), e.g. llava-hf/llava-1.5-7b-hf;
- "llava-original": the LLaVA code's own format: a LLaMA config plus `mm_*` keys, the projector
  beside the LM weights, the vision tower named by `mm_vision_tower` and usually not included;
- "geochat": GeoChat-7B, the original format with `model_type` "geochat" and a 504-px CLIP.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from mgimm_core.errors import ModelError, VisionTowerNotFound

MGIMM, LLAVA_HF, LLAVA_ORIGINAL, GEOCHAT = "mgimm", "llava-hf", "llava-original", "geochat"
FORMATS = (MGIMM, LLAVA_HF, LLAVA_ORIGINAL, GEOCHAT)

#: GeoChat runs CLIP ViT-L/14-336 with its position embeddings interpolated to this input size.
GEOCHAT_INPUT_SIZE = 504

#: How the region reaches the model: as region tokens (MGIMM) or as box text in the prompt.
REGION_AS_TOKENS, REGION_AS_BOX_TEXT, REGION_AS_GEOCHAT_TEXT = "tokens", "box_text", "geochat"


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path.parent}: no {path.name} here; give a model directory (MGIMM, LLaVA-1.5 "
                         "in Hugging Face or original form, or GeoChat)") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot be read as JSON ({exc}); the model folder is damaged, copy or "
                         "export it again") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def detect_format(config: dict, directory: Path) -> str:
    """The kind of model `config` (the directory's config.json) describes."""
    model_type = config.get("model_type")
    if model_type == "mgimm" or (model_type is None and (directory / "mgimm_processor.json").is_file()):
        return MGIMM
    if model_type == "geochat":
        return GEOCHAT
    if model_type == "llava":
        if "text_config" in config or "vision_config" in config:
            return LLAVA_HF
        if "mm_vision_tower" in config or "mm_projector_type" in config:
            return LLAVA_ORIGINAL
    raise ModelError(f"{directory}: config.json has model_type {model_type!r}, which mgimm-geo cannot run; "
                     f"it runs MGIMM directories, LLaVA-1.5 (Hugging Face `llava` or original format) and "
                     f"GeoChat")


def _hub_snapshot(repo_id: str) -> Path | None:
    """A local Hugging Face cache snapshot of `repo_id`, if one was downloaded before (never fetches)."""
    if "/" not in repo_id:
        return None
    home = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" /
                                                                         "huggingface")) / "hub")
    snapshots = home / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    candidates = sorted(snapshots.glob("*/config.json")) if snapshots.is_dir() else []
    return candidates[-1].parent if candidates else None


def resolve_vision_dir(directory: Path, config: dict, vision: str | os.PathLike | None) -> Path:
    """The local vision-tower directory of an original-format checkpoint: `vision` when given, else
    `mm_vision_tower` as a path (absolute, or relative to the model directory), else its Hugging
    Face cache snapshot. Needed even when the checkpoint holds the tower's weights: its config
    (layers, patch size, normalisation) is only there."""
    if vision is not None:
        path = Path(vision)
        if not (path / "config.json").is_file():
            raise VisionTowerNotFound(f"--vision {path}: no config.json there; give a local CLIP directory "
                                      "(e.g. a copy of openai/clip-vit-large-patch14-336)")
        return path
    name = str(config.get("mm_vision_tower") or "")
    for candidate in (Path(name), directory / name):
        if name and (candidate / "config.json").is_file():
            return candidate
    snapshot = _hub_snapshot(name)
    if snapshot is not None:
        return snapshot
    raise VisionTowerNotFound(
        f"{directory}: its vision tower {name or '(mm_vision_tower not set)'} is not on this machine (not a "
        f"folder, not in the Hugging Face cache); give its local folder with --vision DIR")


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint's weight files, safetensors first (an index lists the shards)."""
    for pattern in ("*.safetensors", "*.bin"):
        index = sorted(directory.glob(f"*{pattern[1:]}.index.json"))
        if index:
            shards = sorted(set(read_json(index[0]).get("weight_map", {}).values()))
            return [directory / shard for shard in shards]
        files = [f for f in sorted(directory.glob(pattern))
                 if not f.name.startswith(("adapter_", "training_args", "optimizer", "scheduler", "rng_state"))]
        if files:
            return files
    raise ModelError(f"{directory}: no weight files (*.safetensors or *.bin) here")


@dataclass(frozen=True)
class ModelKind:
    """What a directory is, without loading it."""

    format: str
    config: dict
    vision_dir: Path | None = None

    @property
    def region_prompt(self) -> str:
        if self.format == MGIMM:
            return str(self.config.get("region_prompt", REGION_AS_TOKENS))
        return REGION_AS_GEOCHAT_TEXT if self.format == GEOCHAT else REGION_AS_BOX_TEXT

    def input_size(self) -> int | None:
        """Side of the square model input, pixels (None when the config does not say)."""
        if self.format == GEOCHAT:
            return GEOCHAT_INPUT_SIZE
        vision = self.config.get("vision_config") or {}
        if self.format == LLAVA_ORIGINAL and self.vision_dir is not None:
            vision_config = read_json(self.vision_dir / "config.json")
            vision = vision_config.get("vision_config") or vision_config
        size = self.config.get("image_size") or vision.get("image_size")
        return size if isinstance(size, int) and size > 0 else None


def inspect_model(directory: str | os.PathLike, vision: str | os.PathLike | None = None) -> ModelKind:
    """Read a model directory's config.json and say what it is (resolving an original-format
    checkpoint's vision tower)."""
    path = Path(directory)
    config = read_json(path / "config.json")
    kind = detect_format(config, path)
    vision_dir = resolve_vision_dir(path, config, vision) if kind in (LLAVA_ORIGINAL, GEOCHAT) else None
    return ModelKind(kind, config, vision_dir)
