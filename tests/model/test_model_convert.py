"""Import of reference checkpoints: the reference's real names and files, LoRA merged into the LM and
the region transformer, and region tokens equal to the reference modules' own (tests/model/reference_checkpoint.py,
an independent implementation written from the formulas)."""

import json

import pytest
import torch
from tests.model.reference_checkpoint import (ReferenceRegionPath, add_lora, save_adapter, stage1_key_shapes)

from mgimm_core.errors import IncompleteImportError, ModelError
from mgimm_core.model import MGIMMForConditionalGeneration
from mgimm_core.model.configuration_mgimm import reference_region_settings, tiny_config
from mgimm_core.model.convert_reference import (UNUSED_REASON, convert_reference, lora_delta,
                                                map_reference_key)
from mgimm_core.service.protocol import ERROR_CODES

GRID = 24          # 336 / 14, the reference's patch grid
SIZE = 336


def reference_mgimm(width: int = 1024, grid: int = GRID, seed: int = 0) -> MGIMMForConditionalGeneration:
    """Our model with the reference's region layout at full region width: a 1-layer CLIP of width
    `width` (the region module's width follows it) at 14-px patches, and a tiny LLaMA."""
    torch.manual_seed(seed)
    vision = dict(hidden_size=width, intermediate_size=64, num_hidden_layers=1, num_attention_heads=8,
                  image_size=grid * 14, patch_size=14)
    config = tiny_config(vision_config=vision, image_size=grid * 14, **reference_region_settings())
    return MGIMMForConditionalGeneration(config).eval()


def boxes_anywhere(count: int, seed: int, size: int = SIZE) -> torch.Tensor:
    """Boxes (x1, y1, x2, y2) in input px: the whole input, its corners and edges, sub-pixel and
    one-pixel boxes, then random ones."""
    fixed = torch.tensor([
        [0, 0, size, size], [0, 0, 1, 1], [size - 1, size - 1, size, size], [0, 0, 14, 14],
        [size - 14, size - 14, size, size], [0, size - 14, 14, size], [size - 14, 0, size, 14],
        [0, 0, size, 1], [size - 1, 0, size, size], [100.25, 50.5, 100.75, 51.0], [0, 160, size, 176],
        [167.5, 167.5, 168.5, 168.5],
    ], dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(count - len(fixed), 2, 2, generator=g) * size
    lo, hi = xy.min(1).values, xy.max(1).values
    return torch.cat([fixed, torch.cat([lo, hi], dim=1)])


def max_token_difference(model, reference: ReferenceRegionPath, boxes: torch.Tensor, seed: int) -> float:
    """Largest |ours - reference| over the region tokens of `boxes`, each on its own random patch grid."""
    g = torch.Generator().manual_seed(seed)
    width = model.config.vision_config.hidden_size
    patches = torch.randn(len(boxes), reference.grid**2, width, generator=g)
    with torch.no_grad():
        ours = model.region_features(patches, boxes[:, None])
        theirs = reference.region_tokens(patches, boxes)
    assert ours.shape == theirs.shape == (len(boxes), 2, width)
    return (ours - theirs).abs().max().item()


# ------------------------------------------------------------------ names
def test_reference_test_modules_have_exactly_the_reference_names_and_shapes():
    with torch.device("meta"):
        reference = ReferenceRegionPath()
    ours = {k: list(v.shape) for k, v in reference.reference_state().items()}
    assert ours == stage1_key_shapes()


def test_every_reference_tensor_maps_or_is_unused_by_box_prompts():
    model = reference_mgimm(width=32, grid=4)
    params = model.state_dict()
    for key in stage1_key_shapes():
        target, reason = map_reference_key(key)
        if key.endswith(("point_embeddings.2.weight", "point_embeddings.3.weight")):
            continue  # the two rows of region_module.corner_embed (checked on import below)
        if target is None:
            assert reason == UNUSED_REASON
            assert key.split("prompt_encoder.")[1] in (
                "point_embeddings.0.weight", "point_embeddings.1.weight", "no_mask_embed.weight"), key
        else:
            assert target in params, (key, target)
    assert map_reference_key("model.region_interactive_layer.layers.1.mlp.lin2.weight")[0] == \
        "region_module.layers.1.mlp.2.weight"
    assert map_reference_key("base_model.model.model.region_interactive_layer.final_attn_token_to_image."
                             "q_proj.base_layer.weight")[0] == "region_module.final_attn.q_proj.weight"
    assert map_reference_key("base_model.model.model.mm_projector.0.weight")[0] == "projector.linear_1.weight"
    assert map_reference_key("model.layers.3.self_attn.q_proj.weight")[0] == \
        "language_model.model.layers.3.self_attn.q_proj.weight"


# ------------------------------------------------------------------ exactness at full width
@pytest.mark.slow
def test_stage1_import_reproduces_reference_region_tokens(tmp_path):
    reference = ReferenceRegionPath(dim=1024, grid=GRID, llm_width=32).eval()
    reference.randomize(seed=1)
    torch.save(reference.reference_state(), tmp_path / "mm_prompt_projector.bin")
    model = reference_mgimm()
    report = convert_reference(model, stage1=tmp_path / "mm_prompt_projector.bin")
    assert report.not_provided == [] and report.merged_lora == []
    assert sorted(report.skipped) == ["model.prompt_encoder.no_mask_embed.weight",
                                      "model.prompt_encoder.point_embeddings.0.weight",
                                      "model.prompt_encoder.point_embeddings.1.weight"]
    assert max_token_difference(model, reference, boxes_anywhere(40, seed=2), seed=3) < 1e-4
    # The reference's box numerics matter: without them the same weights give other tokens.
    model.region_module.box_shift, model.region_module.prompt_size = 0.0, SIZE
    assert max_token_difference(model, reference, boxes_anywhere(16, seed=2), seed=3) > 1e-2


@pytest.mark.slow
def test_stage2_import_is_base_plus_lora_on_region_transformer_and_lm(tmp_path):
    """Stage 1, then stage 2's non_lora_trainables (PEFT base_layer names) over it, then the LoRA
    pairs of the adapter (on every region-transformer linear layer and on an LM layer) added."""
    reference = ReferenceRegionPath(dim=1024, grid=GRID, llm_width=32).eval()
    reference.randomize(seed=1)
    torch.save(reference.reference_state(), tmp_path / "stage1.bin")
    reference.randomize(seed=2)  # stage 2 trained these in full
    torch.save(reference.reference_state(peft_base=True, prefix="base_model.model."),
               tmp_path / "non_lora_trainables.bin")
    config = {"r": 16, "lora_alpha": 256, "alpha_pattern": {"mlp.lin1": 32}, "rank_pattern": {"lin2": 8},
              "target_modules": ["q_proj", "k_proj", "v_proj", "out_proj", "lin1", "lin2"]}
    g = torch.Generator().manual_seed(4)
    tensors = {}
    for name, layer in reference.lora_linears().items():
        if ".region_interactive_layer." not in name:
            continue
        rank = 8 if name.endswith("lin2") else 16
        alpha = 32 if name.endswith("mlp.lin1") else 256
        a, b = add_lora(layer, rank, alpha / rank, g)
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = b
    model = reference_mgimm()
    lm_key = "language_model.model.layers.1.mlp.down_proj.weight"
    lm_before = model.state_dict()[lm_key].clone()
    lm_a, lm_b = torch.randn(16, 64, generator=g), torch.randn(32, 16, generator=g)
    tensors["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"] = lm_a
    tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"] = lm_b
    save_adapter(tmp_path / "adapter", config, tensors)

    report = convert_reference(model, stage1=tmp_path / "stage1.bin", adapter_dir=tmp_path / "adapter",
                               non_lora_trainables=tmp_path / "non_lora_trainables.bin")
    assert report.not_provided == []
    assert len(report.merged_lora) == len(tensors) // 2 == 2 * 14 + 4 + 1
    torch.testing.assert_close(model.state_dict()[lm_key], lm_before + 16.0 * lm_b @ lm_a)
    assert max_token_difference(model, reference, boxes_anywhere(40, seed=5), seed=6) < 1e-4
    torch.testing.assert_close(model.projector.linear_1.weight, reference.model.mm_projector[0].weight)


# ------------------------------------------------------------------ LoRA arithmetic as peft does it
def test_lm_lora_merge_equals_peft_merge_with_rslora_and_patterns(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = reference_mgimm(width=32, grid=4)
    torch.manual_seed(1)
    lm = MGIMMForConditionalGeneration(model.config).language_model
    lm.load_state_dict(model.language_model.state_dict())
    config = LoraConfig(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "v_proj", "down_proj"],
                        rank_pattern={"down_proj": 2}, alpha_pattern={r"layers\.1\.self_attn\.v_proj": 3})
    peft_model = get_peft_model(lm, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload()
    reference = ReferenceRegionPath(dim=32, grid=4, llm_width=32, heads=8, mlp_dim=2048)
    torch.save(reference.reference_state(), tmp_path / "stage1.bin")
    report = convert_reference(model, stage1=tmp_path / "stage1.bin", adapter_dir=tmp_path / "adapter")
    assert len(report.merged_lora) == 2 * 3
    for key, value in merged.state_dict().items():
        torch.testing.assert_close(model.language_model.state_dict()[key], value)


def test_lora_delta_scale_and_fan_in_fan_out():
    a, b = torch.randn(4, 6), torch.randn(5, 4)
    torch.testing.assert_close(lora_delta({"lora_alpha": 8}, "m.q_proj", a, b), 2.0 * b @ a)
    torch.testing.assert_close(lora_delta({"lora_alpha": 8, "use_rslora": True}, "m.q_proj", a, b), 4.0 * b @ a)
    torch.testing.assert_close(lora_delta({"lora_alpha": 8, "alpha_pattern": {"q_proj": 2}}, "m.q_proj", a, b),
                               0.5 * b @ a)
    torch.testing.assert_close(lora_delta({"lora_alpha": 8, "fan_in_fan_out": True}, "m.c_attn", a, b),
                               (2.0 * b @ a).T)


def test_dora_and_other_peft_methods_are_refused(tmp_path):
    model = reference_mgimm(width=32, grid=4)
    save_adapter(tmp_path / "dora", {"r": 4, "lora_alpha": 8, "use_dora": True}, {})
    with pytest.raises(ModelError, match="DoRA"):
        convert_reference(model, adapter_dir=tmp_path / "dora", partial=True)
    save_adapter(tmp_path / "ia3", {"peft_type": "IA3"}, {})
    with pytest.raises(ModelError, match="only LoRA"):
        convert_reference(model, adapter_dir=tmp_path / "ia3", partial=True)


# ------------------------------------------------------------------ completeness
def test_missing_region_tensor_fails_naming_it_unless_partial(tmp_path):
    reference = ReferenceRegionPath(dim=32, grid=4, llm_width=32)
    state = reference.reference_state()
    del state["model.region_interactive_layer.layers.1.norm3.bias"]
    torch.save(state, tmp_path / "stage1.bin")
    with pytest.raises(IncompleteImportError, match=r"region_module\.layers\.1\.norm3\.bias") as caught:
        convert_reference(reference_mgimm(width=32, grid=4), stage1=tmp_path / "stage1.bin")
    assert caught.value.missing == ["region_module.layers.1.norm3.bias"]
    assert caught.value.code == "incomplete_import" and caught.value.code in ERROR_CODES
    assert isinstance(caught.value, ModelError)
    report = convert_reference(reference_mgimm(width=32, grid=4), stage1=tmp_path / "stage1.bin", partial=True)
    assert report.not_provided == ["region_module.layers.1.norm3.bias"]


def test_lora_on_unknown_module_and_shape_mismatch_and_pickled_code_are_refused(tmp_path):
    model = reference_mgimm(width=32, grid=4)
    save_adapter(tmp_path / "adapter", {"r": 2, "lora_alpha": 2},
                 {"base_model.model.model.some_head.proj.lora_A.weight": torch.zeros(2, 32),
                  "base_model.model.model.some_head.proj.lora_B.weight": torch.zeros(32, 2)})
    with pytest.raises(ModelError, match="some_head.proj"):
        convert_reference(model, adapter_dir=tmp_path / "adapter", partial=True)
    torch.save({"model.mm_projector.0.weight": torch.zeros(3, 3)}, tmp_path / "bad.bin")
    with pytest.raises(ModelError, match="projector.linear_1.weight"):
        convert_reference(model, stage1=tmp_path / "bad.bin")
    torch.save({"x": object()}, tmp_path / "code.bin")  # not loadable with weights_only=True
    with pytest.raises(ModelError, match="not a plain tensor checkpoint"):
        convert_reference(model, stage1=tmp_path / "code.bin")


def test_reference_numerics_are_neutral_by_default():
    config = tiny_config()
    assert config.region_box_shift == 0.0 and config.region_prompt_size is None
    assert json.loads(config.to_json_string())["region_prompt_size"] is None
    settings = reference_region_settings()
    assert (settings["region_box_shift"], settings["region_prompt_size"]) == (0.5, 800)
    with pytest.raises(ValueError, match="region_prompt_size"):
        tiny_config(region_prompt_size=0)
