"""Each training mode leaves exactly the intended parameters trainable; LoRA merges and reloads."""

import numpy as np
import pytest
import torch

from mgimm_core.model import MGIMMForConditionalGeneration, configure_trainable, merge_lora
from mgimm_core.model.testing_mgimm import random_chip, tiny_model, tiny_processor


def parts(names):
    return {name.split(".")[0] for name in names}


def test_stage1_trains_region_module_and_projector_only():
    model = tiny_model()
    names = configure_trainable(model)
    assert parts(names) == {"region_module", "projector"}
    assert len(names) == sum(1 for n, _ in model.named_parameters() if n.startswith(("region_module.", "projector.")))


def test_stage2_adds_lora_and_trains_adapters_projector_region():
    model = tiny_model()
    names = configure_trainable(model, lora=True)
    lm = [n for n in names if n.startswith("language_model.")]
    assert parts(names) == {"region_module", "projector", "language_model"}
    assert lm and all("lora_" in n for n in lm)
    # all linear layers of the LM carry adapters, the output head does not
    assert sum(".lora_A." in n for n in lm) == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    assert not any("lm_head" in n for n in lm)
    assert model.config.use_lora


def test_global_only_ablation_trains_projector_only():
    model = tiny_model()
    assert parts(configure_trainable(model, train_region=False)) == {"projector"}


def test_from_scratch_trains_everything():
    model = tiny_model()
    names = configure_trainable(model, train_vision=True, train_lm=True)
    assert len(names) == sum(1 for _ in model.parameters())
    assert not model.config.freeze_vision


def test_vision_blocks_train_the_blocks_that_reach_the_features():
    # the tiny CLIP reads hidden state -2 (its first block's output), the DINOv2 tower its last one
    dinov2 = {"vision_config": {"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 3,
                                "num_attention_heads": 2, "intermediate_size": 64, "image_size": 32,
                                "patch_size": 8}, "vision_feature_layer": -1}
    for settings, block in (({}, "layers.0."), (dinov2, "layer.2.")):
        model = tiny_model(**settings)
        names = configure_trainable(model, train_vision=True, vision_blocks=1)
        vision = [n for n in names if n.startswith("vision_tower.")]
        assert vision and all(block in n for n in vision), vision
        assert len(vision) == sum(1 for n, _ in model.named_parameters() if n.startswith("vision_tower.")
                                  and f".{block}" in n)
        assert not model.config.freeze_vision
        # every trained tower parameter reaches the features the model reads
        model.patch_features(torch.randn(1, 3, 32, 32)).sum().backward()
        params = dict(model.named_parameters())
        assert all(params[n].grad is not None and params[n].grad.abs().sum() > 0 for n in vision)
        assert configure_trainable(model, train_vision=False, vision_blocks=1) == configure_trainable(model)
    with pytest.raises(ValueError, match="vision_blocks=2"):
        configure_trainable(tiny_model(), train_vision=True, vision_blocks=2)   # only block 0 is read
    with pytest.raises(ValueError, match="vision_blocks=0"):
        configure_trainable(tiny_model(), train_vision=True, vision_blocks=0)


def test_lora_checkpoint_reloads_and_merges_to_the_same_outputs(tmp_path):
    model = tiny_model()
    configure_trainable(model, lora=True)
    with torch.no_grad():  # make the adapters do something
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    processor = tiny_processor(model.config)
    batch = processor(random_chip(32, 32), boxes=np.array([[0, 0, 16, 16]]))
    expected = model(**batch).logits
    model.save_pretrained(tmp_path / "unmerged")
    reloaded = MGIMMForConditionalGeneration.from_pretrained(tmp_path / "unmerged").eval()
    torch.testing.assert_close(reloaded(**batch).logits, expected)
    merged = merge_lora(reloaded)
    assert not merged.config.use_lora and not any("lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-5, rtol=1e-4)
    merged.save_pretrained(tmp_path / "merged")
    final = MGIMMForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(final(**batch).logits, expected, atol=1e-5, rtol=1e-4)


def test_stage1_gradients_reach_region_module_and_projector_only():
    model = tiny_model()
    model.train()
    configure_trainable(model)
    processor = tiny_processor(model.config)
    batch = processor(random_chip(32, 32), boxes=np.array([[0, 0, 16, 16]]), answers="red car", mode="region")
    model(**batch, mode="region").loss.backward()
    with_grad = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {"region_module", "projector"}


def test_saved_dir_opens_with_auto_classes(tmp_path):
    from transformers import AutoConfig, AutoModelForImageTextToText

    tiny_model().save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "mgimm"
    assert isinstance(AutoModelForImageTextToText.from_pretrained(tmp_path), MGIMMForConditionalGeneration)
