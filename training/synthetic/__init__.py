"""A synthetic, georeferenced remote-sensing world for training and testing the demo MGIMM model.

In memory: `generate_scene(seed, size, gsd)` -> `SceneSample`; `describe_tile(scene, window, rng)`;
`region_caption(obj, window)`. To files: `export.export_scenes` or `python -m training.synthetic`.
"""

from .scene import SceneSample, generate_scene
from .text import STAGE1_INSTRUCTION, describe_tile, region_caption

__all__ = ["SceneSample", "generate_scene", "describe_tile", "region_caption", "STAGE1_INSTRUCTION"]
