"""Which family of model a directory holds, read from its JSON files alone (no torch import).

The families themselves (how each is recognised, loaded and prompted) live in mgimm_core/families/;
this module reads a folder's files for them: config.json, the weight files, and for original-format
LLaVA/GeoChat checkpoints the local vision-tower folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgimm_core.errors import ModelError, VisionTowerNotFound

if TYPE_CHECKING:
    from mgimm_core.families.base import Family


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path.parent}: no {path.name} here; give a model directory (a folder saved by "
                         "save_pretrained, see docs/models.md)") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot be read as JSON ({exc}); the model folder is damaged, copy or "
                         "export it again") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def _hub_snapshot(repo_id: str) -> Path | None:
    """A local Hugging Face cache snapshot of `repo_id`, if one was downloaded before (never fetches)."""
    if "/" not in repo_id:
        return None
    home = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" /
                                                                         "huggingface")) / "hub")
    snapshots = home / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    candidates = sorted(snapshots.glob("*/config.json")) if snapshots.is_dir() else []
    return candidates[-1].parent if candidates else None


def resolve_vision_dir(directory: Path, config: dict[str, Any], vision: str | os.PathLike[str] | None) -> Path:
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


def open_weight_permissions(directory: str | os.PathLike[str]) -> None:
    """Give the folder's weight files the mode the umask gives new files (transformers 5's
    save_pretrained writes them 0600), so an exported model is readable where it is shared or packaged."""
    umask = os.umask(0)
    os.umask(umask)
    for path in weight_files(Path(directory)):
        path.chmod(0o666 & ~umask)


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint's weight files, safetensors first (an index lists the shards)."""
    for pattern in ("*.safetensors", "*.bin"):
        index = sorted(directory.glob(f"*{pattern[1:]}.index.json"))
        if index:
            weight_map = read_json(index[0]).get("weight_map")
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise ModelError(f"{index[0]}: its weight_map is not a map of tensor names to shard files; the "
                                 "model folder is damaged, copy or export it again")
            shards = [directory / shard for shard in sorted(set(weight_map.values()))]
            missing = [shard.name for shard in shards if not shard.is_file()]
            if missing:
                raise ModelError(f"{index[0]}: names shard(s) that are not in the folder ({', '.join(missing[:3])}); "
                                 "copy the whole model folder again")
            return shards
        files = [f for f in sorted(directory.glob(pattern))
                 if not f.name.startswith(("adapter_", "training_args", "optimizer", "scheduler", "rng_state"))]
        if files:
            return files
    raise ModelError(f"{directory}: no weight files (*.safetensors or *.bin) here")


@dataclass(frozen=True)
class ModelKind:
    """What a directory is, without loading it: its family (mgimm_core/families), config.json and,
    for original-format LLaVA/GeoChat, the local vision-tower directory."""

    family: "Family"
    config: dict[str, Any]
    path: Path
    vision_dir: Path | None = None

    @property
    def format(self) -> str:
        """The family's name (recorded in provenance and model-info)."""
        return self.family.name


def inspect_model(directory: str | os.PathLike[str], vision: str | os.PathLike[str] | None = None) -> ModelKind:
    """Read a model directory's config.json and say what it is (resolving an original-format
    checkpoint's vision tower)."""
    from mgimm_core.families import detect

    path = Path(directory)
    config = read_json(path / "config.json")
    family = detect(config, path)
    return ModelKind(family, config, path, family.vision_dir(path, config, vision))
