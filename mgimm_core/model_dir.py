"""What a model directory says about itself without loading it (no torch import).

`describe --resume` with nothing left, `regions` and the planners need the model's identity and its
chip settings before (or instead of) loading weights; reading two small JSON files gives both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgimm_core.errors import ModelError
from mgimm_core.model_card import read_card
from mgimm_core.model_formats import ModelKind, inspect_model, weight_files
from mgimm_core.regions import ChipSettings

if TYPE_CHECKING:
    from mgimm_core.families.base import Family

#: The demo model shipped inside the package (the default of every `--model`).
DEMO_MODEL_DIR = Path(__file__).parent / "demo_model"

#: `--model demo` names the shipped demo model (unless a model folder of that name is in the way).
DEMO_MODEL_NAME = "demo"

#: Models up to this weight size get the large default batch (see ModelDirectory.default_batch_size).
SMALL_MODEL_BYTES = 512 * 2**20


@dataclass(frozen=True)
class ModelDirectory:
    """A saved model directory: its path, the id rows record, how regions become its chips, what
    model family it is (`mgimm_core.families`, through `kind`) and, for original-format
    LLaVA/GeoChat, the local vision-tower directory it loads with."""

    path: Path
    model_id: str
    chip: ChipSettings
    kind: ModelKind

    @classmethod
    def resolve(cls, model_dir: "str | Path | ModelDirectory | None" = None,
                vision: str | Path | None = None) -> "ModelDirectory":
        """The directory `model_dir` (default, or DEMO_MODEL_NAME: the shipped demo model), checked to
        hold a model; an already resolved ModelDirectory is returned as it is (callers pass either)."""
        if isinstance(model_dir, ModelDirectory):
            return model_dir
        if str(model_dir) == DEMO_MODEL_NAME and not (Path(DEMO_MODEL_NAME) / "config.json").is_file():
            model_dir = None
        path = Path(model_dir) if model_dir is not None else DEMO_MODEL_DIR
        if model_dir is not None and not path.exists():
            raise ModelError(f"{path}: no such folder (give the folder of a saved model; without --model the demo "
                             f"model shipped with mgimm-geo is used)")
        if not (path / "config.json").is_file():
            hint = ("the embedded demo model is missing from this installation; reinstall mgimm-geo"
                    if model_dir is None else "give a directory written by save_pretrained / "
                    "`python -m training`, or a model folder of a family docs/models.md lists (it holds config.json)")
            raise ModelError(f"{path}: no model here ({hint})")
        kind = inspect_model(path, vision)
        chip = kind.family.chip_settings(kind)
        return cls(path, "demo" if model_dir is None else path.name, chip, kind)

    @property
    def family(self) -> Family:
        """The model's family (mgimm_core/families): how it loads, takes regions and is prompted."""
        return self.kind.family

    @property
    def format(self) -> str:
        return self.kind.family.name

    @property
    def vision_dir(self) -> Path | None:
        return self.kind.vision_dir

    @cached_property
    def weight_bytes(self) -> int:
        """Size of the weight files (safetensors, else .bin shards; PEFT adapters not counted)."""
        try:
            files = weight_files(self.path)
        except ModelError:
            return 0
        return sum(f.stat().st_size for f in files if f.is_file())

    @property
    def default_batch_size(self) -> int:
        """Regions per batch when none is asked for: 64 for small models (the demo model decodes
        ~4.8x faster at 64 than one region at a time on 2 CPU cores, bench/bench_describe.py), 16 for
        large ones (a 7B model's KV cache for 64 long prompts would not fit a CPU machine's memory)."""
        return 64 if self.weight_bytes <= SMALL_MODEL_BYTES else 16

    @cached_property
    def card(self) -> dict[str, Any]:
        """The model card's facts (model_card.json: imagery, GSD range...), {} when there is none."""
        return read_card(self.path)

    @cached_property
    def sha256(self) -> str:
        from mgimm_core.output import sha256_path

        return sha256_path(self.path)
