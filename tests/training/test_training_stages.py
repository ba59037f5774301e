"""Both reference stages through `python -m training train`, on a tiny model and a tiny slice of
reference-format data written by the synthetic world exporter (the full-scale path, scaled down)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from training.__main__ import main
from training.synthetic.export import export_scenes
from training.synthetic.scene import generate_scene
from training.train import ConfigError, STAGE_PRESETS, load_config

CONFIGS = Path(__file__).parents[2] / "training" / "configs"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    export_scenes([generate_scene(3, size=384)], root / "data", np.random.default_rng(0), tile=192)
    for name in ("tiny_stage1.yaml", "tiny_stage2.yaml"):
        shutil.copy(CONFIGS / name, root / name)
    return root


def test_stage1_then_stage2_train_the_intended_parts(workdir, capsys):
    assert main(["train", str(workdir / "tiny_stage1.yaml")]) == 0
    stage1 = json.loads(capsys.readouterr().out)
    assert stage1["steps"] == 4 and stage1["data"]["kept"] > 0
    saved = load_file(str(workdir / "runs/stage1/checkpoint-last/trainable.safetensors"))
    assert saved and all(k.startswith(("region_module.", "projector.")) for k in saved)

    assert main(["train", str(workdir / "tiny_stage2.yaml")]) == 0
    stage2 = json.loads(capsys.readouterr().out)
    saved = load_file(str(workdir / "runs/stage2/checkpoint-last/trainable.safetensors"))
    assert any("lora_" in k for k in saved)                      # LoRA adapters on the LM
    assert not any(k.startswith("language_model.") and "lora_" not in k for k in saved)
    assert not any(k.startswith("vision_tower.") for k in saved)
    assert stage2["steps"] == 3 and (workdir / "runs/stage2/model/config.json").exists()
    log = [json.loads(x) for x in (workdir / "runs/stage2/train_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(np.isfinite(e["loss"]) for e in log)


def test_stage_presets_follow_the_reference_recipe():
    assert STAGE_PRESETS["region_alignment"]["lr"] == 1e-4 and not STAGE_PRESETS["region_alignment"]["lora"]
    assert STAGE_PRESETS["description"]["projector_lr"] == 2e-6 and STAGE_PRESETS["description"]["lora"]
    assert STAGE_PRESETS["global_only"]["mode"] == "global"


def test_bad_config_names_file_and_missing_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stage: region_alignment\nmodel: {init: tiny}\n")
    with pytest.raises(ConfigError, match="bad.yaml: missing 'data'"):
        load_config(path)
    path.write_text("stage: stage9\nmodel: {}\ndata: {}\noutput: x\n")
    with pytest.raises(ConfigError, match="stage9"):
        load_config(path)


def test_mgimm_from_llava_trains_stage1_then_stage2(workdir, tmp_path, capsys):
    # The reference's real starting point at tiny size: a LLaVA-1.5 checkpoint (llava-hf format,
    # written here) gives the vision tower, projector and LM; the region module starts fresh.
    from mgimm_core.model import from_llava
    from mgimm_core.model.testing_llava import write_llava_hf

    llava_dir, reference = write_llava_hf(tmp_path / "llava", seed=4)
    model, _ = from_llava(llava_dir)
    assert model.config.mode == "global_region" and model.config.region_prompt == "tokens"
    torch_close = __import__("torch").testing.assert_close
    torch_close(model.projector.linear_1.weight, reference.model.multi_modal_projector.linear_1.weight)
    torch_close(model.language_model.lm_head.weight, reference.lm_head.weight)
    stage1 = tmp_path / "stage1.yaml"
    stage1.write_text((workdir / "tiny_stage1.yaml").read_text()
                      .replace("model: {init: tiny}", f"model: {{init: llava, path: {llava_dir}}}")
                      .replace("data/", f"{workdir}/data/").replace("runs/stage1", str(tmp_path / "s1")))
    assert main(["train", str(stage1)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 4
    saved = load_file(str(tmp_path / "s1/checkpoint-last/trainable.safetensors"))
    assert saved and all(k.startswith(("region_module.", "projector.")) for k in saved)
    stage2 = tmp_path / "stage2.yaml"
    stage2.write_text((workdir / "tiny_stage2.yaml").read_text()
                      .replace("runs/stage1/model", str(tmp_path / "s1/model"))
                      .replace("data/", f"{workdir}/data/").replace("runs/stage2", str(tmp_path / "s2")))
    assert main(["train", str(stage2)]) == 0
    saved = load_file(str(tmp_path / "s2/checkpoint-last/trainable.safetensors"))
    assert any("lora_" in k for k in saved)
    assert (tmp_path / "s2/model/config.json").exists()
