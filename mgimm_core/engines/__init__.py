"""Where `describe` runs: in this process (`local`) or on a Ray cluster (`ray`).

Both engines have the same shape: a model identity (`model_id`, `model_sha256`, `device`,
`chip_size`), `describe_to_output(scenes, features, output, mode, run, ...)` returning the JSON
summary, and `close()`. Ray is an optional extra and is imported only by `open_engine("ray")`.
"""

from __future__ import annotations

ENGINES = ("local", "ray")


def open_engine(name: str, model_dir=None, *, device: str = "auto", max_new_tokens: int = 200,
                compile: bool = False, address: str | None = None, workers: int | None = None,
                **scene_options):
    """Load the model where the engine runs it. scene_options (bands, nodata) are what each
    worker opens scenes with; the local engine uses the scenes it is given."""
    if name == "local":
        from .local import LocalEngine

        return LocalEngine.load(model_dir, device=device, max_new_tokens=max_new_tokens, compile=compile)
    if name == "ray":
        from .ray_engine import RayEngine

        return RayEngine.start(model_dir, device=device, max_new_tokens=max_new_tokens, compile=compile,
                               address=address, workers=workers, scene_options=scene_options)
    raise ValueError(f"engine {name!r}: use one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "open_engine"]
