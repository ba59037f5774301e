"""The composed model: features at placeholders, modes, any backbone, save/load, from_components."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel, LlamaConfig

from mgimm_core.model import MGIMMForConditionalGeneration, build_word_tokenizer, demo_region_settings
from mgimm_core.model.testing_mgimm import TINY_WORDS, random_chip, tiny_model, tiny_processor

BOXES = [np.array([[0, 0, 10, 10], [5, 5, 30, 20]]), np.array([[2, 2, 9, 9]])]


def make_batch(model, mode=None, answers=("red car", "grey tank")):
    processor = tiny_processor(model.config)
    return processor([random_chip(32, 32), random_chip(20, 36, 1)], boxes=BOXES, prompts=["describe", "the"],
                     answers=list(answers), mode=mode)


@pytest.mark.parametrize("mode", ["region", "global_region", "global"])
def test_forward_gives_logits_and_loss_in_every_mode(mode):
    model = tiny_model(**demo_region_settings(), global_tokens=4)
    batch = make_batch(model, mode)
    out = model(**batch, mode=mode)
    assert out.logits.shape == (*batch["input_ids"].shape, 64)
    assert torch.isfinite(out.loss)


def test_loss_ignores_prompt_positions():
    model = tiny_model()
    batch = make_batch(model)
    out = model(**batch)
    logits = out.logits[:, :-1].reshape(-1, 64)
    targets = batch["labels"][:, 1:].reshape(-1)
    keep = targets != -100
    expected = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(out.loss, expected)


def test_region_tokens_reach_the_language_model():
    model = tiny_model()
    processor = tiny_processor(model.config)
    chip = random_chip(32, 32)
    a = model(**processor(chip, boxes=np.array([[0, 0, 10, 10]]))).logits
    b = model(**processor(chip, boxes=np.array([[16, 16, 30, 30]]))).logits
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_placeholder_feature_mismatch_raises_value_error():
    model = tiny_model()
    batch = make_batch(model, mode="global")
    with pytest.raises(ValueError, match="do not match image features"):
        model(**batch, mode="global_region")


@pytest.mark.parametrize("vision, text", [
    (dict(model_type="siglip_vision_model"), dict(model_type="qwen2")),
    (dict(model_type="dinov2", num_register_tokens=0, mlp_ratio=2), dict(model_type="phi")),
    (dict(model_type="vit"), dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=4, n_positions=256)),
])
def test_other_backbones_drop_prefix_tokens_and_run(vision, text):
    model = tiny_model(vision_config=vision, text_config=text)
    patches = model.patch_features(torch.zeros(1, 3, 32, 32))
    assert patches.shape == (1, 16, 32)
    assert torch.isfinite(model(**make_batch(model)).loss)


@pytest.mark.parametrize("text", [{}, dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=4, n_positions=256)])
def test_save_load_round_trip_gives_identical_logits(tmp_path, text):
    model = tiny_model(**demo_region_settings(), text_config=text)
    batch = make_batch(model)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = MGIMMForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    lm = loaded.language_model
    if text:  # GPT-2 ties its output head to the input embedding: still tied after loading
        assert lm.lm_head.weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()


def test_from_components_loads_local_encoder_and_llm(tmp_path):
    torch.manual_seed(0)
    vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                              num_attention_heads=4, image_size=32, patch_size=8))
    vision.save_pretrained(tmp_path / "vision")
    tokenizer = build_word_tokenizer(TINY_WORDS)
    llm = AutoModelForCausalLM.from_config(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                       num_attention_heads=4, vocab_size=len(tokenizer)))
    llm.save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    model = MGIMMForConditionalGeneration.from_components(
        vision=tmp_path / "vision", llm=tmp_path / "llm", region_heads=2, region_mlp_dim=64).eval()
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    assert torch.equal(model.vision_tower.post_layernorm.weight, vision.post_layernorm.weight)
    assert torch.equal(model.language_model.lm_head.weight, llm.lm_head.weight)
    assert not any(p.is_meta for p in model.parameters())
    batch = make_batch(model)
    assert torch.isfinite(model(**batch).loss)
