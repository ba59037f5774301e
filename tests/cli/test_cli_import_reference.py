"""`mgimm-geo import-reference`: reference checkpoints (tiny, random, the reference's names) -> a model
directory that `describe --model` loads; incomplete imports fail naming the missing tensors."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from click.testing import CliRunner
from tests.model.reference_checkpoint import ReferenceRegionPath, add_lora, save_adapter
from transformers import AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel, LlamaConfig

from batch.cli import cli
from mgimm_core.model import MGIMMForConditionalGeneration, build_word_tokenizer
from mgimm_core.model.convert_reference import REFERENCE_IMPORT_FILE
from mgimm_core.model.testing_mgimm import TINY_WORDS


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    """Local vision (CLIP, width 32, 32 px, 8-px patches: a 4 x 4 grid) and LLaMA directories, and
    reference checkpoints of those sizes: a stage-1 file and a stage-2 adapter with LoRA pairs on
    the region transformer and the LM."""
    root = tmp_path_factory.mktemp("reference")
    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     image_size=32, patch_size=8)).save_pretrained(root / "vision")
    tokenizer = build_word_tokenizer(TINY_WORDS)
    AutoModelForCausalLM.from_config(LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=len(tokenizer))).save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    reference = ReferenceRegionPath(dim=32, grid=4, llm_width=32)
    reference.randomize(seed=1)
    state = reference.reference_state()
    torch.save(state, root / "mm_prompt_projector.bin")
    del state["model.region_interactive_layer.layers.0.mlp.lin1.bias"]
    torch.save(state, root / "incomplete.bin")
    g = torch.Generator().manual_seed(2)
    q_a, q_b = add_lora(reference.lora_linears()["model.region_interactive_layer.layers.0.self_attn.q_proj"], 4, 2.0, g)
    save_adapter(root / "adapter", {"r": 4, "lora_alpha": 8}, {
        "base_model.model.model.region_interactive_layer.layers.0.self_attn.q_proj.lora_A.weight": q_a,
        "base_model.model.model.region_interactive_layer.layers.0.self_attn.q_proj.lora_B.weight": q_b,
        "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight": torch.randn(4, 32, generator=g),
        "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight": torch.randn(64, 4, generator=g)})
    return root, reference


def invoke(args):
    return CliRunner().invoke(cli, args)


def test_import_writes_a_model_directory_that_describe_reads(tmp_path, components, make_raster):
    root, reference = components
    out = tmp_path / "imported"
    result = invoke(["import-reference", "--stage1", str(root / "mm_prompt_projector.bin"),
                     "--adapter", str(root / "adapter"), "--vision", str(root / "vision"),
                     "--llm", str(root / "llm"), "-o", str(out), "--dtype", "fp32"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["merged_lora"] == 2 and report["not_provided"] == []
    assert report["skipped"] == 3 and "Wrote" in result.stderr
    for name in ("config.json", "model.safetensors", "mgimm_processor.json", "tokenizer.json", REFERENCE_IMPORT_FILE):
        assert (out / name).is_file(), name
    umask = os.umask(0o022)
    os.umask(umask)
    # the weights get the umask's mode like every other file (transformers 5 alone writes them 0600)
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o666 & ~umask
    model = MGIMMForConditionalGeneration.from_pretrained(out)
    assert (model.config.region_box_shift, model.config.region_prompt_size) == (0.5, 800)
    assert not model.config.region_dense_mask and model.config.region_tokens == ("corners",)
    torch.testing.assert_close(model.region_module.norm_final.weight,
                               reference.model.region_interactive_layer.norm_final_attn.weight)

    scene = make_raster()
    described = invoke(["describe", scene, "--aoi", "bbox:500100,4499700,500300,4499900", "--aoi-crs",
                        "EPSG:32633", "-o", str(tmp_path / "out.gpkg"), "--model", str(out),
                        "--max-new-tokens", "3", "--no-attributes", "--threads", "1"])
    assert described.exit_code == 0, described.output
    assert json.loads(described.stdout)["described"] == 1

    again = invoke(["import-reference", "--stage1", str(root / "mm_prompt_projector.bin"), "--vision",
                    str(root / "vision"), "--llm", str(root / "llm"), "-o", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_missing_tensor_fails_naming_it_and_partial_writes_anyway(tmp_path, components):
    root, _ = components
    args = ["import-reference", "--stage1", str(root / "incomplete.bin"), "--vision", str(root / "vision"),
            "--llm", str(root / "llm")]
    failed = invoke([*args, "-o", str(tmp_path / "strict")])
    assert failed.exit_code == 1
    assert "region_module.layers.0.mlp.0.bias" in failed.output and "--partial" in failed.output
    assert not (tmp_path / "strict").exists()
    partial = invoke([*args, "-o", str(tmp_path / "partial"), "--partial"])
    assert partial.exit_code == 0, partial.output
    assert json.loads(partial.stdout)["not_provided"] == ["region_module.layers.0.mlp.0.bias"]
    record = json.loads((tmp_path / "partial" / REFERENCE_IMPORT_FILE).read_text())
    assert record["not_provided"] == ["region_module.layers.0.mlp.0.bias"] and record["dtype"] == "bfloat16"


def test_usage_errors_exit_2(tmp_path, components):
    root, _ = components
    nothing = invoke(["import-reference", "--vision", str(root / "vision"), "--llm", str(root / "llm"),
                      "-o", str(tmp_path / "x")])
    assert nothing.exit_code == 2 and "--stage1" in nothing.output
    missing = invoke(["import-reference", "--stage1", str(tmp_path / "nope.bin"), "--vision", str(root / "vision"),
                      "--llm", str(root / "llm"), "-o", str(tmp_path / "x")])
    assert missing.exit_code == 2
