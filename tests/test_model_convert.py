"""Import of reference checkpoints, on synthetic state dicts shaped and named like the reference's."""

import json

import pytest
import torch

from mgimm_core.errors import ModelError
from mgimm_core.model.convert_reference import convert_reference, map_reference_key
from mgimm_core.model.testing_mgimm import tiny_model

SAM_BLOCK = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
             "cross_attn_token_to_image.q_proj", "cross_attn_token_to_image.k_proj",
             "cross_attn_token_to_image.v_proj", "cross_attn_token_to_image.out_proj", "mlp.lin1", "mlp.lin2",
             "cross_attn_image_to_token.q_proj", "cross_attn_image_to_token.k_proj",
             "cross_attn_image_to_token.v_proj", "cross_attn_image_to_token.out_proj",
             "norm1", "norm2", "norm3", "norm4"]


def reference_stage1(model, prefix="model."):
    """A stage-1 `mm_prompt_projector.bin` as the reference would write it: LLaVA projector names,
    SAM prompt-encoder and two-way-transformer names, random values of our shapes."""
    ours = model.state_dict()
    g = torch.Generator().manual_seed(0)

    def like(key):
        return torch.randn(ours[key].shape, generator=g)

    state = {}
    for i, j in ((0, 1), (2, 2)):
        for kind in ("weight", "bias"):
            state[f"{prefix}mm_projector.{i}.{kind}"] = like(f"projector.linear_{j}.{kind}")
    state[f"{prefix}prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = like("region_module.pe.gaussian")
    for i in range(4):
        state[f"{prefix}prompt_encoder.point_embeddings.{i}.weight"] = torch.randn(1, 32, generator=g)
    state[f"{prefix}prompt_encoder.not_a_point_embed.weight"] = torch.randn(1, 32, generator=g)
    for layer in range(2):
        for part in SAM_BLOCK:
            ours_part = part.replace("mlp.lin1", "mlp.0").replace("mlp.lin2", "mlp.2")
            for kind in ("weight", "bias"):
                state[f"{prefix}region_interactive_module.layers.{layer}.{part}.{kind}"] = like(
                    f"region_module.layers.{layer}.{ours_part}.{kind}")
    for part in ("q_proj", "k_proj", "v_proj", "out_proj"):
        for kind in ("weight", "bias"):
            state[f"{prefix}region_interactive_module.final_attn_token_to_image.{part}.{kind}"] = like(
                f"region_module.final_attn.{part}.{kind}")
    for kind in ("weight", "bias"):
        state[f"{prefix}region_interactive_module.norm_final_attn.{kind}"] = like(f"region_module.norm_final.{kind}")
    return state


def test_key_mapping_examples():
    assert map_reference_key("model.mm_projector.2.bias")[0] == "projector.linear_2.bias"
    assert map_reference_key("base_model.model.model.mm_projector.0.weight")[0] == "projector.linear_1.weight"
    assert map_reference_key("model.region_interactive_module.layers.1.mlp.lin2.weight")[0] == \
        "region_module.layers.1.mlp.2.weight"
    assert map_reference_key("model.layers.3.self_attn.q_proj.weight")[0] == \
        "language_model.model.layers.3.self_attn.q_proj.weight"
    assert map_reference_key("model.prompt_encoder.mask_downscaling.0.weight")[0] is None


def test_stage1_import_loads_every_region_and_projector_tensor(tmp_path):
    model = tiny_model(region_dense_mask=False)  # the reference has no dense mask embedding
    state = reference_stage1(model)
    torch.save(state, tmp_path / "mm_prompt_projector.bin")
    report = convert_reference(model, stage1=str(tmp_path / "mm_prompt_projector.bin"))
    assert report.not_provided == []
    ours = model.state_dict()
    assert torch.equal(ours["projector.linear_2.weight"], state["model.mm_projector.2.weight"])
    assert torch.equal(ours["region_module.layers.1.mlp.2.bias"],
                       state["model.region_interactive_module.layers.1.mlp.lin2.bias"])
    corners = torch.cat([state["model.prompt_encoder.point_embeddings.2.weight"],
                         state["model.prompt_encoder.point_embeddings.3.weight"]])
    assert torch.equal(ours["region_module.corner_embed.weight"], corners)
    assert "model.prompt_encoder.not_a_point_embed.weight" in report.skipped


def test_stage2_adapter_is_merged_and_non_lora_trainables_win(tmp_path):
    model = tiny_model(region_dense_mask=False)
    before = model.state_dict()["language_model.model.layers.0.self_attn.q_proj.weight"].clone()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}))
    a, b = torch.randn(4, 32), torch.randn(32, 4)
    torch.save({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": a,
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": b}, adapter / "adapter_model.bin")
    trainables = {f"base_model.model.{k}": v for k, v in reference_stage1(model).items()}
    torch.save(trainables, tmp_path / "non_lora_trainables.bin")
    report = convert_reference(model, adapter_dir=str(adapter), non_lora_trainables=str(tmp_path / "non_lora_trainables.bin"))
    after = model.state_dict()["language_model.model.layers.0.self_attn.q_proj.weight"]
    torch.testing.assert_close(after, before + 2.0 * b @ a)
    assert report.merged_lora == ["language_model.model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(model.state_dict()["projector.linear_1.bias"], trainables["base_model.model.model.mm_projector.0.bias"])


def test_shape_mismatch_and_pickled_code_are_refused(tmp_path):
    model = tiny_model()
    torch.save({"model.mm_projector.0.weight": torch.zeros(3, 3)}, tmp_path / "bad.bin")
    with pytest.raises(ModelError, match="projector.linear_1.weight"):
        convert_reference(model, stage1=str(tmp_path / "bad.bin"))
    torch.save({"x": object()}, tmp_path / "code.bin")  # not loadable with weights_only=True
    with pytest.raises(ModelError, match="not a plain tensor checkpoint"):
        convert_reference(model, stage1=str(tmp_path / "code.bin"))
