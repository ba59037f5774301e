"""A synthetic, georeferenced remote-sensing world for training and testing the demo MGIMM model.

In memory: `generate_scene(seed, size, gsd)` -> `SceneSample` (world v2; with `look=Look(...)` world
v3, or `generate_scene_v3(seed, size)` at the seed's own GSD and look: docs/demo_v3.md);
`describe_tile(scene, window, rng)`; `region_caption(obj, window)`. To files: `export.export_scenes`
or `python -m training.synthetic`. Preview: `python -m training.synthetic.preview`.
"""

from .scene import Look, SceneSample, generate_scene, generate_scene_v3
from .text import STAGE1_INSTRUCTION, describe_tile, region_caption

__all__ = ["Look", "SceneSample", "generate_scene", "generate_scene_v3", "describe_tile", "region_caption",
           "STAGE1_INSTRUCTION"]
