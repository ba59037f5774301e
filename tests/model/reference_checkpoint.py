"""An independent implementation of the reference code's region path, for import tests.

Written from the formulas of SAM's prompt encoder and two-way transformer as the reference uses them
(docs/model.md, "Import of reference checkpoints"), with exactly the reference's tensor names
(tests/data/reference_stage1_keys.json), and nothing imported from mgimm_core.model: the import must
reproduce these modules' region tokens, so they must not share code with the modules under test.

- Box prompt: boxes (input px, already scaled to the 336-px input) + 0.5, divided by the prompt size
  800, encoded as [sin, cos](2 pi (2c - 1) @ G), plus point_embeddings[2] / [3] for the two corners.
- Dense PE: the same encoding of the patch centres ((i + 0.5) / grid), x first.
- Two-way transformer: blocks of self-attention (no query PE in block 0), token->image cross
  attention, MLP (lin1, ReLU, lin2), image->token cross attention, norms 1-4; then a final
  token->image attention and norm_final_attn. Cross attentions work at half width.
- Attention: separate heads, softmax(q k^T / sqrt(d_head)) v, out_proj.
- LoRA (PEFT's forward, dropout off): y = base(x) + scale * B(A(x)), scale = alpha / r.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

PROMPT_SIZE = 800
KEYS_FILE = Path(__file__).parents[1] / "data" / "reference_stage1_keys.json"


class LoRALinear(nn.Module):
    """A linear layer with an optional LoRA pair, computed as PEFT does in its forward (unmerged)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.base = nn.Linear(d_in, d_out)
        self.lora_a: torch.Tensor | None = None
        self.lora_b: torch.Tensor | None = None
        self.scale = 0.0

    def forward(self, x):
        y = self.base(x)
        if self.lora_a is not None:
            y = y + self.scale * ((x @ self.lora_a.T) @ self.lora_b.T)
        return y


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, downsample: int = 1):
        super().__init__()
        inner = dim // downsample
        self.heads = heads
        self.q_proj = LoRALinear(dim, inner)
        self.k_proj = LoRALinear(dim, inner)
        self.v_proj = LoRALinear(dim, inner)
        self.out_proj = LoRALinear(inner, dim)

    def _heads(self, x):
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q, k, v):
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        out = attn @ v
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class MLPBlock(nn.Module):
    def __init__(self, dim: int, mlp_dim: int):
        super().__init__()
        self.lin1 = LoRALinear(dim, mlp_dim)
        self.lin2 = LoRALinear(mlp_dim, dim)

    def forward(self, x):
        return self.lin2(torch.relu(self.lin1(x)))


class TwoWayAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, skip_first_layer_pe: bool):
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, heads, 2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, heads, 2)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, dim: int, heads: int = 8, mlp_dim: int = 2048, depth: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(TwoWayAttentionBlock(dim, heads, mlp_dim, i == 0) for i in range(depth))
        self.final_attn_token_to_image = Attention(dim, heads, 2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image_embedding, image_pe, point_embedding):
        """image_embedding, image_pe (B, C, H, W); point_embedding (B, N, C) -> queries (B, N, C)."""
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn)


class PositionEmbeddingRandom(nn.Module):
    def __init__(self, num_pos_feats: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def _pe_encoding(self, coords):
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def grid(self, h: int, w: int):
        """(C, H, W) encoding of the cell centres of an h x w grid."""
        ones = torch.ones(h, w, dtype=self.positional_encoding_gaussian_matrix.dtype)
        y = (ones.cumsum(0) - 0.5) / h
        x = (ones.cumsum(1) - 0.5) / w
        return self._pe_encoding(torch.stack([x, y], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords, image_size: tuple[int, int]):
        coords = coords.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._pe_encoding(coords.to(self.positional_encoding_gaussian_matrix.dtype))


class PromptEncoder(nn.Module):
    """The box path of SAM's prompt encoder (points and masks are never fed by the reference)."""

    def __init__(self, dim: int, grid: int):
        super().__init__()
        self.grid = grid
        self.pe_layer = PositionEmbeddingRandom(dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(4))
        self.no_mask_embed = nn.Embedding(1, dim)

    def embed_boxes(self, boxes):
        """(N, 4) boxes in input px -> (N, 2, C) corner embeddings."""
        coords = (boxes + 0.5).reshape(-1, 2, 2)
        corners = self.pe_layer.forward_with_coords(coords, (PROMPT_SIZE, PROMPT_SIZE))
        corners[:, 0, :] += self.point_embeddings[2].weight
        corners[:, 1, :] += self.point_embeddings[3].weight
        return corners

    def get_dense_pe(self):
        return self.pe_layer.grid(self.grid, self.grid).unsqueeze(0)


class ReferenceInner(nn.Module):
    def __init__(self, dim: int, grid: int, llm_width: int, heads: int, mlp_dim: int):
        super().__init__()
        self.prompt_encoder = PromptEncoder(dim, grid)
        self.region_interactive_layer = TwoWayTransformer(dim, heads, mlp_dim)
        self.mm_projector = nn.Sequential(nn.Linear(dim, llm_width), nn.GELU(), nn.Linear(llm_width, llm_width))


class ReferenceRegionPath(nn.Module):
    """`model.prompt_encoder`, `model.region_interactive_layer`, `model.mm_projector` as the reference
    names them. region_tokens(patches, boxes) is the reference's region branch before the projector."""

    def __init__(self, dim: int = 1024, grid: int = 24, llm_width: int = 4096, heads: int = 8,
                 mlp_dim: int = 2048):
        super().__init__()
        self.grid = grid
        self.model = ReferenceInner(dim, grid, llm_width, heads, mlp_dim)

    def region_tokens(self, patches, boxes):
        """patches (N, grid^2, C) row-major; boxes (N, 4) input px -> (N, 2, C): one box per image."""
        n, p, c = patches.shape
        image = patches.transpose(1, 2).reshape(n, c, self.grid, self.grid)
        image_pe = self.model.prompt_encoder.get_dense_pe().expand(n, -1, -1, -1)
        sparse = self.model.prompt_encoder.embed_boxes(boxes)
        return self.model.region_interactive_layer(image, image_pe, sparse)

    def randomize(self, seed: int) -> None:
        """Every tensor random (norms around 1, biases small), reproducibly."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, tensor in self.state_dict(keep_vars=True).items():
                if name.endswith("gaussian_matrix") or "point_embeddings" in name or "no_mask" in name:
                    value = torch.randn(tensor.shape, generator=g)
                elif ".norm" in name and name.endswith(".weight"):
                    value = 1 + 0.1 * torch.randn(tensor.shape, generator=g)
                elif name.endswith(".bias"):
                    value = 0.1 * torch.randn(tensor.shape, generator=g)
                else:
                    value = torch.randn(tensor.shape, generator=g) / math.sqrt(tensor.shape[-1])
                tensor.copy_(value)

    def reference_state(self, peft_base: bool = False, prefix: str = "") -> dict[str, torch.Tensor]:
        """The tensors under the reference's names: `...q_proj.weight` (stage 1), or with peft_base
        `...q_proj.base_layer.weight` (non_lora_trainables of a PEFT-wrapped model); `prefix` is
        prepended (`base_model.model.` in stage 2 files)."""
        state = {}
        for name, tensor in self.state_dict().items():
            name = name.replace(".base.", ".base_layer." if peft_base else ".")
            state[prefix + name] = tensor.clone()
        return state

    def lora_linears(self) -> dict[str, LoRALinear]:
        """PEFT module names (`model.region_interactive_layer.layers.0.mlp.lin1`) -> layers."""
        return {name: module for name, module in self.named_modules() if isinstance(module, LoRALinear)}


def add_lora(layer: LoRALinear, rank: int, scale: float, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Give `layer` a random LoRA pair (A (r, in), B (out, r)); returns (A, B)."""
    d_out, d_in = layer.base.weight.shape
    layer.lora_a = torch.randn(rank, d_in, generator=generator) / math.sqrt(d_in)
    layer.lora_b = 0.02 * torch.randn(d_out, rank, generator=generator) / math.sqrt(rank)
    layer.scale = scale
    return layer.lora_a, layer.lora_b


def stage1_key_shapes() -> dict[str, list[int]]:
    """Names and shapes of the reference's stage-1 file (CLIP-L width 1024, 7B LLM width 4096)."""
    return json.loads(KEYS_FILE.read_text())["tensors"]


def save_adapter(directory: Path, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    """A PEFT adapter dir as the reference's stage 2 writes it (adapter_config.json, adapter_model.bin)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **config}))
    torch.save(tensors, directory / "adapter_model.bin")
