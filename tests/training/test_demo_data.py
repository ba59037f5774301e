"""Training samples (training/demo_data.py)."""

from __future__ import annotations

import numpy as np


def test_empty_windows_reach_object_size_and_never_touch_an_object():
    """no_object_min_side under 48: empty squares as small as a guide's (the guide check asks about
    them); the default keeps the 48 px floor of the shipped recipe."""
    import shapely

    from training.demo_data import _empty_window
    from training.synthetic.scene import generate_scene

    scene = generate_scene(5, size=512)
    sides = {}
    for min_side in (6, 48):
        rng = np.random.default_rng(0)
        windows = [w for w in (_empty_window(scene, rng, (96, 320), min_side=min_side) for _ in range(60)) if w]
        for x0, y0, side, _ in windows:
            square = shapely.box(x0, y0, x0 + side, y0 + side)
            assert not any(o.footprint.intersects(square) for o in scene.objects)
        sides[min_side] = [w[2] for w in windows]
    assert min(sides[6]) < 24 and min(sides[48]) >= 48
