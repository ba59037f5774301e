"""MGIMMConfig validates its settings and survives save/load with any sub-config types."""

import pytest

from mgimm_core.model import MGIMMConfig, demo_region_settings, tiny_config


def test_derived_sizes_follow_settings():
    config = tiny_config()
    assert config.grid_size == 4 and config.num_global_tokens == 16 and config.tokens_per_region == 2
    demo = tiny_config(**demo_region_settings(), global_tokens=4)
    assert demo.num_global_tokens == 4 and demo.tokens_per_region == 4


@pytest.mark.parametrize("bad", [
    dict(region_tokens=("corners", "bogus")),
    dict(region_tokens=()),
    dict(mode="stage2"),
    dict(global_tokens=5),
    dict(image_size=64),  # differs from the vision encoder's 32 px
    dict(prompt_template="no placeholder {prompt}"),
    dict(vision_feature_select="cls"),
])
def test_invalid_settings_raise_value_error(bad):
    with pytest.raises(ValueError):
        tiny_config(**bad)


def test_save_load_keeps_sub_config_types(tmp_path):
    config = tiny_config(
        vision_config=dict(model_type="siglip_vision_model"), text_config=dict(model_type="qwen2"),
        region_tokens=["corners", "pooled"], global_tokens=4,
    )
    config.save_pretrained(tmp_path)
    loaded = MGIMMConfig.from_pretrained(tmp_path)
    assert loaded.vision_config.model_type == "siglip_vision_model"
    assert loaded.text_config.model_type == "qwen2" and loaded.text_config.hidden_size == 32
    assert loaded.region_tokens == ("corners", "pooled") and loaded.global_tokens == 4


def test_defaults_are_the_reference_design():
    config = MGIMMConfig()
    assert config.vision_config.model_type == "clip_vision_model"
    assert config.vision_config.image_size == 336 and config.vision_config.patch_size == 14
    assert config.num_global_tokens == 576 and config.region_tokens == ("corners",)
    assert config.vision_feature_layer == -2 and config.freeze_vision
    assert config.text_config.model_type == "llama"
