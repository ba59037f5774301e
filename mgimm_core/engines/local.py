"""The local engine: one model in this process, the pipeline's streaming describe (what
`describe` always did)."""

from __future__ import annotations

from mgimm_core.output import sha256_path


class LocalEngine:
    """A loaded Describer; describe_to_output is `mgimm_core.pipeline.describe_to_output`."""

    name = "local"

    def __init__(self, describer):
        self.describer = describer
        self._sha256 = None

    @classmethod
    def load(cls, model_dir=None, *, device: str = "auto", max_new_tokens: int = 200,
             compile: bool = False) -> "LocalEngine":
        from mgimm_core.describer import Describer  # torch loads only now

        return cls(Describer.load(model_dir, device=device, max_new_tokens=max_new_tokens, compile=compile))

    @property
    def model_id(self) -> str:
        return self.describer.model_id

    @property
    def device(self) -> str:
        return str(self.describer.device)

    @property
    def chip_size(self) -> int:
        return self.describer.chip_size

    @property
    def model_sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_path(self.describer.model_dir)
        return self._sha256

    def describe_to_output(self, scenes, features, output, mode, run, **options) -> dict:
        """scenes: opened Scenes; options: those of pipeline.describe_to_output."""
        from mgimm_core.pipeline import describe_to_output

        summary = describe_to_output(scenes, features, self.describer, output, mode, run, **options)
        summary["engine"] = self.name
        return summary

    def close(self) -> None:
        pass
