"""The region interactive module: region prompts (boxes, optional polygon masks) -> region tokens.

Every region is processed on its own (its own copy of the patch keys), so a region's tokens depend
only on its image and its own prompt: moving one box never changes another region's tokens.
Boxes are (x1, y1, x2, y2) in pixels of the model input; masks are bool at input resolution and
reach the module as the fraction of each patch they cover ("area fraction", 0..1, grid g x g).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mgimm_core.errors import ModelError

from .configuration_mgimm import PIXEL_ENCODER_KINDS, ZOOM_GRID, MGIMMConfig

GEOMETRY_FEATURES = 11
# The zoomed view of a region ("zoom" tokens): a square around its box, ZOOM_CONTEXT times the
# box's longer side, never smaller than 1 / ZOOM_MAX of the input (at most 4x magnification) nor
# larger than the input, shifted to lie inside it; its patches pooled to a ZOOM_GRID x ZOOM_GRID grid.
ZOOM_CONTEXT = 1.25
ZOOM_MAX = 4.0
# The convolutional encoder of kinds "pixels" and "pixel_token": channels after each 3x3 convolution (strides 1, 2, 2),
# small so that the bfloat16 demo package stays under 30 MB.
PIXEL_CHANNELS = (16, 32, 64)


def box_to_mask(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Rasterise boxes (..., 4) in input pixels to bool masks (..., size, size): a pixel is inside
    when its centre is. The pixel holding the box centre is always inside, so tiny boxes are never
    empty. The processor and the model both use this rule, so box-only regions match exactly."""
    centres = torch.arange(size, device=boxes.device, dtype=boxes.dtype) + 0.5
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))
    inside_x = (centres >= x1) & (centres < x2)
    inside_y = (centres >= y1) & (centres < y2)
    mask = inside_y[..., :, None] & inside_x[..., None, :]
    cx = ((x1 + x2) / 2).floor().clamp(0, size - 1).long().squeeze(-1)
    cy = ((y1 + y2) / 2).floor().clamp(0, size - 1).long().squeeze(-1)
    flat = mask.reshape(-1, size, size)
    idx = torch.arange(flat.shape[0], device=boxes.device)
    flat[idx, cy.reshape(-1), cx.reshape(-1)] = True
    return flat.reshape(mask.shape)


def mask_to_patch_fraction(masks: torch.Tensor, grid: int) -> torch.Tensor:
    """(..., S, S) bool masks -> (..., grid, grid) fraction of each patch's area inside the mask."""
    lead = masks.shape[:-2]
    size = masks.shape[-1]
    pooled = F.avg_pool2d(masks.reshape(-1, 1, size, size).float(), kernel_size=size // grid)
    return pooled.reshape(*lead, grid, grid)


def zoom_windows(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 4) boxes in input px -> (N, 2, 3) affine maps (`F.affine_grid`) from the zoomed view to the
    input, in normalised coordinates (align_corners=False): the squares described at ZOOM_CONTEXT."""
    boxes = boxes.float()
    side = (torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * ZOOM_CONTEXT)
    side = side.clamp(size / ZOOM_MAX, size)
    half = side / 2
    cx = ((boxes[:, 0] + boxes[:, 2]) / 2).clamp(half, size - half)
    cy = ((boxes[:, 1] + boxes[:, 3]) / 2).clamp(half, size - half)
    scale = side / size
    zeros = torch.zeros_like(scale)
    return torch.stack([torch.stack([scale, zeros, 2 * cx / size - 1], -1),
                        torch.stack([zeros, scale, 2 * cy / size - 1], -1)], 1)


def zoom_view(images: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """(N, C, S, S) images (pixels or masks as float) resampled bilinearly inside `windows`
    (`zoom_windows`) to (N, C, S, S). Windows are never larger than the input, so this only enlarges."""
    grid = F.affine_grid(windows.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def mask_pool(feats: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """(N, P, D) patch features averaged with the region's (N, P) area fractions as weights: (N, 1, D)."""
    weights = fraction / fraction.sum(-1, keepdim=True).clamp_min(1e-6)
    return torch.einsum("np,npd->nd", weights, feats)[:, None]


def zoom_tokens(feats: torch.Tensor, fraction: torch.Tensor, grid: int) -> torch.Tensor:
    """Tokens of a zoomed view: (N, P, D) patch features and (N, P) area fractions of the region in
    that view -> (N, 1 + ZOOM_GRID**2, D): the features pooled under the region, then the view's
    grid average-pooled to ZOOM_GRID x ZOOM_GRID (where the objects of the view lie)."""
    pooled = mask_pool(feats, fraction)
    n, _, d = feats.shape
    cells = F.adaptive_avg_pool2d(feats.transpose(1, 2).reshape(n, d, grid, grid), ZOOM_GRID)
    return torch.cat([pooled, cells.flatten(2).transpose(1, 2)], dim=1)


class PixelRegionEncoder(nn.Module):
    """What region kind "pixels" adds to the "pooled" token ("pixel_token": a token of its own):
    three 3x3 convolutions over the chip's own pixels (strides 1, 2, 2), their maps pooled under the
    region (area-weighted mean and maximum), normalised and projected to the vision width. A ViT's
    first patch embedding mixes an object of a few pixels with the rest of its 14 px patch
    (docs/demo_v3.md "The frozen tower probed"); at full resolution its colour and outline survive.
    Added to a token the language model already reads, since a token of its own was barely used
    after a continuation (docs/demo_v3.md "v3m"). The projection starts at zero, so adding the kind
    to a trained model leaves its answers unchanged until it trains (training/demo_recipe.py
    `add_region_tokens`)."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        c1, c2, c3 = PIXEL_CHANNELS
        self.convs = nn.Sequential(
            nn.Conv2d(channels, c1, 3, padding=1), nn.GELU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.GELU(),
        )
        self.norm = nn.LayerNorm(2 * c3)
        self.proj = nn.Linear(2 * c3, width)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, chips: torch.Tensor, chip_of_region: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """chips (B, C, S, S): normalised pixels, each run through the convolutions once however many
        regions it holds; chip_of_region (N,): each region's chip; masks (N, S, S): the region at input
        resolution (never empty: `RegionInteractiveModule` falls back to the box). Returns (N, 1, width)."""
        maps = self.convs(chips.to(self.proj.weight.dtype)).flatten(2)[chip_of_region]   # (N, c3, h * w)
        side = round(maps.shape[-1] ** 0.5)
        weights = F.adaptive_avg_pool2d(masks[:, None].to(maps.dtype), side).flatten(1)  # (N, h * w)
        mean = mask_pool(maps.transpose(1, 2), weights)[:, 0]
        peak = maps.masked_fill((weights <= 0)[:, None], float("-inf")).amax(-1)
        token: torch.Tensor = self.proj(self.norm(torch.cat([mean, peak], dim=-1)))[:, None]
        return token


class FourierPositionEncoding(nn.Module):
    """Random-Fourier features of 2-D points in 0..1 (SAM's PositionEmbeddingRandom):
    [sin, cos](2 pi (2p - 1) G), G ~ N(0, scale^2) of shape (2, width/2), fixed after creation."""

    gaussian: torch.Tensor

    def __init__(self, width: int, scale: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("gaussian", scale * torch.randn(2, width // 2, generator=generator, device="cpu"))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        projected = (2 * points.to(self.gaussian.dtype) - 1) @ self.gaussian * (2 * math.pi)
        return torch.cat([projected.sin(), projected.cos()], dim=-1)


class RegionAttention(nn.Module):
    """Multi-head attention with an optional internal width reduction (SAM's downsample rate) and
    a bool key mask (True: may attend)."""

    def __init__(self, width: int, heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = width // downsample
        self.heads = heads
        self.q_proj = nn.Linear(width, inner)
        self.k_proj = nn.Linear(width, inner)
        self.v_proj = nn.Linear(width, inner)
        self.out_proj = nn.Linear(inner, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, length, inner = x.shape
        return x.reshape(n, length, self.heads, inner // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        # Computed in SAM's order (q k^T, divided by sqrt(d_head), softmax, times v) rather than with
        # a fused kernel: imported reference weights then give the reference's region tokens to the
        # last bit, even where the weights make the softmax sharp (tests/model/test_model_convert.py). The
        # score matrices are small (2 queries x P patches, or P x 2).
        q, k, v = self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        n, heads, length, head_dim = out.shape
        projected: torch.Tensor = self.out_proj(out.transpose(1, 2).reshape(n, length, heads * head_dim))
        return projected


class TwoWayBlock(nn.Module):
    """One block of SAM's two-way transformer: queries self-attend, attend to the patch keys, pass
    an MLP, then the keys attend back to the queries."""

    def __init__(self, width: int, heads: int, mlp_dim: int, downsample: int, skip_first_pe: bool) -> None:
        super().__init__()
        self.self_attn = RegionAttention(width, heads)
        self.norm1 = nn.LayerNorm(width)
        self.cross_attn_token_to_image = RegionAttention(width, heads, downsample)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, width))
        self.norm3 = nn.LayerNorm(width)
        self.cross_attn_image_to_token = RegionAttention(width, heads, downsample)
        self.norm4 = nn.LayerNorm(width)
        self.skip_first_pe = skip_first_pe

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor,
                key_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys, key_mask))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, queries + query_pe, queries))
        return queries, keys


class RegionInteractiveModule(nn.Module):
    """Region prompts + patch features -> `tokens_per_region` tokens per region, in the vision width.

    Token kinds, in `config.region_tokens` order: "corners" (2 tokens: Fourier encoding of each box
    corner + a learned corner embedding, refined by a two-way transformer over the patches + dense
    positional encoding), "pooled" (patch features averaged under the mask, weighted by area
    fraction), "geometry" (an MLP of box position, size, aspect and mask fill), "zoom" (`zoom_tokens`
    of the region's zoomed view, which the model computes: it needs the vision tower). Kind "pixels"
    adds no token: `PixelRegionEncoder` over the chip's pixels is added to the "pooled" token.
    """

    def __init__(self, config: MGIMMConfig) -> None:
        super().__init__()
        width = config.vision.hidden_size
        self.kinds = tuple(config.region_tokens)
        self.image_size = config.image_size
        # Reference-compatibility box numerics (MGIMMConfig docstring): corner c encoded at
        # (c + box_shift) / prompt_size; neutral (0, image_size) for models trained here.
        self.box_shift = float(config.region_box_shift)
        self.prompt_size = config.region_prompt_size or config.image_size
        self.grid = config.grid_size
        self.masked_attention = config.region_masked_attention
        if not self.kinds:  # a global-only model (region as box text): no region module at all
            return
        self.pe = FourierPositionEncoding(width)
        if "corners" in self.kinds:
            self.corner_embed = nn.Embedding(2, width)
            self.layers = nn.ModuleList(
                TwoWayBlock(width, config.region_heads, config.region_mlp_dim,
                            config.region_attention_downsample, skip_first_pe=(i == 0))
                for i in range(config.region_depth)
            )
            self.final_attn = RegionAttention(width, config.region_heads, config.region_attention_downsample)
            self.norm_final = nn.LayerNorm(width)
            # Learned in-region / out-of-region embeddings added to the keys: the dense mask prompt.
            self.mask_embed = nn.Embedding(2, width) if config.region_dense_mask else None
        if "geometry" in self.kinds:
            self.geometry_mlp = nn.Sequential(
                nn.Linear(GEOMETRY_FEATURES, width), nn.GELU(), nn.Linear(width, width)
            )
        if any(kind in PIXEL_ENCODER_KINDS for kind in self.kinds):
            self.pixel_encoder = PixelRegionEncoder(config.vision.num_channels, width)

    def dense_positional_encoding(self) -> torch.Tensor:
        """(P, width) Fourier encoding of the patch centres (row-major, as the patch tokens).
        Computed on the fly: a non-persistent buffer would not survive from_pretrained's meta init."""
        device = self.pe.gaussian.device
        centres = (torch.arange(self.grid, dtype=torch.float32, device=device) + 0.5) / self.grid
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        encoded: torch.Tensor = self.pe(torch.stack([x, y], dim=-1).reshape(-1, 2))
        return encoded

    def _corner_tokens(self, feats: torch.Tensor, boxes: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
        """feats (N, P, D), boxes (N, 4) input px, fraction (N, P) -> (N, 2, D)."""
        corners = (boxes.reshape(-1, 2, 2) + self.box_shift) / self.prompt_size
        query_pe = self.pe(corners).to(feats.dtype) + self.corner_embed.weight.to(feats.dtype)
        keys = feats
        if self.mask_embed is not None:
            inside, outside = self.mask_embed.weight.to(feats.dtype)
            keys = keys + fraction[..., None] * inside + (1 - fraction[..., None]) * outside
        key_pe = self.dense_positional_encoding().to(feats.dtype).expand_as(keys)
        key_mask = (fraction > 0) if self.masked_attention else None
        queries = query_pe
        for layer in self.layers:
            queries, keys = layer(queries, keys, query_pe, key_pe, key_mask)
        attended = self.final_attn(queries + query_pe, keys + key_pe, keys, key_mask)
        tokens: torch.Tensor = self.norm_final(queries + attended)
        return tokens

    def _geometry(self, boxes: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
        """(N, 4) boxes and (N, P) fractions -> (N, GEOMETRY_FEATURES) scalars, all about 0..1."""
        b = boxes / self.image_size
        w = (b[:, 2] - b[:, 0]).clamp_min(1e-4)
        h = (b[:, 3] - b[:, 1]).clamp_min(1e-4)
        area = fraction.mean(-1)
        fill = (area / (w * h)).clamp(0, 1)
        aspect = torch.log(w / h).clamp(-4, 4) / 4
        return torch.stack(
            [b[:, 0], b[:, 1], b[:, 2], b[:, 3], (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2,
             w, h, aspect, area.sqrt(), fill], dim=-1,
        )

    def _pixel_token(self, pixels: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
                     dtype: torch.dtype, kind: str) -> torch.Tensor:
        """The pixel encoder's (N, 1, D) token for `kind` ("pixels": added to the pooled token;
        "pixel_token": a token of its own)."""
        if pixels is None:
            raise ModelError(f'region token kind "{kind}" needs the chips: call the model, '
                             "whose region_features passes them from pixel_values")
        token: torch.Tensor = self.pixel_encoder(*pixels)
        return token.to(dtype)

    def forward(self, feats: torch.Tensor, boxes: torch.Tensor, fraction: torch.Tensor,
                zoom: tuple[torch.Tensor, torch.Tensor] | None = None,
                pixels: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """feats (N, P, D): patch features of each region's image; boxes (N, 4) input pixels;
        fraction (N, P): area fraction of each patch inside the region; zoom: the patch features
        and region fractions of each region's zoomed view (kind "zoom" only); pixels: the chips
        (B, C, S, S), each region's chip index (N,) and its mask at input resolution (N, S, S), boxes
        standing in for empty polygons (kinds "pixels", "pixel_token" only). Returns (N, T, D)."""
        empty = fraction.sum(-1) == 0
        if empty.any():  # a degenerate polygon: fall back to its box
            box_mask = box_to_mask(boxes[empty], self.image_size)
            fraction = fraction.clone()
            fraction[empty] = mask_to_patch_fraction(box_mask, self.grid).flatten(1).to(fraction.dtype)
        fraction = fraction.to(feats.dtype)
        tokens = []
        for kind in self.kinds:
            if kind == "corners":
                tokens.append(self._corner_tokens(feats, boxes.to(feats.dtype), fraction))
            elif kind == "pooled":
                pooled = mask_pool(feats, fraction)
                tokens.append(pooled + self._pixel_token(pixels, feats.dtype, kind="pixels")
                              if "pixels" in self.kinds else pooled)
            elif kind == "geometry":
                geometry = self._geometry(boxes.float(), fraction.float()).to(feats.dtype)
                tokens.append(self.geometry_mlp(geometry)[:, None])
            elif kind == "zoom":
                if zoom is None:
                    raise ModelError('region token kind "zoom" needs the zoomed views: call the model, '
                                     "whose region_features computes them from pixel_values")
                zoom_feats, zoom_fraction = zoom
                tokens.append(zoom_tokens(zoom_feats, zoom_fraction.to(zoom_feats.dtype), self.grid))
            elif kind == "pixel_token":
                tokens.append(self._pixel_token(pixels, feats.dtype, kind))
        return torch.cat(tokens, dim=1)
