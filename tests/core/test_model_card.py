"""The model card's warnings (mgimm_core/model_card.py), judged on real files through
`jobs.scene_warnings`, the function every describe run calls."""

from __future__ import annotations

from mgimm_core.jobs import scene_warnings
from mgimm_core.model_dir import ModelDirectory
from mgimm_core.scene import Scene
from training.synthetic.demo_inputs import write_demo_inputs


def test_a_synthetic_only_model_warns_on_real_scenes_not_on_generated_ones(tmp_path, make_raster):
    generated = write_demo_inputs(tmp_path / "demo").scene          # tagged by training/synthetic/export.py
    real = make_raster("real.tif")                                  # any other GeoTIFF
    card = {"synthetic_only": True, "gsd_m": [0.3, 30.0]}
    with Scene.open(str(generated)) as synthetic, Scene.open(real) as other:
        assert scene_warnings([synthetic], card) == []
        (line,) = scene_warnings([other], card)
        assert line.startswith(f"{real}: the model was trained on synthetic scenes only")
        assert "often wrong" in line and "docs/demo_v3.md" in line
        assert scene_warnings([other], {"gsd_m": [0.3, 30.0]}) == []      # a card that claims no such thing
    assert ModelDirectory.resolve().card["synthetic_only"] is True        # the shipped demo model says so
