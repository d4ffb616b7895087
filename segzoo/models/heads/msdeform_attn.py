"""Multi-scale deformable attention (Deformable DETR), in plain PyTorch.

:func:`multi_scale_deformable_attention` is the operator (mmcv's ``multi_scale_deformable_attn_pytorch``
signature; compiled kernels compute the same): every query samples ``P`` points per head on each of
``L`` value maps, bilinearly (zeros outside the map, ``align_corners=False``), and sums them with its
attention weights. :class:`MSDeformAttn` is the module around it (value / output projections, the
sampling offsets and attention weights predicted from the query), with the parameter names of both
references (SSSegmentation's ``MSDeformAttn`` and transformers'
``Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["multi_scale_deformable_attention", "MSDeformAttn"]


def _shapes(spatial_shapes) -> list[tuple[int, int]]:
    if isinstance(spatial_shapes, torch.Tensor):
        spatial_shapes = spatial_shapes.tolist()
    return [(int(h), int(w)) for h, w in spatial_shapes]


def multi_scale_deformable_attention(value: torch.Tensor, spatial_shapes, sampling_locations: torch.Tensor,
                                     attention_weights: torch.Tensor) -> torch.Tensor:
    """Deformable attention over several value maps.

    ``value`` (N, S, heads, d): the maps of ``spatial_shapes`` ((h, w) per level, a list or an (L, 2)
    tensor) flattened row-major and concatenated (S = sum h*w); ``sampling_locations`` (N, Q, heads, L,
    P, 2): (x, y) in [0, 1] of each level (0 and 1 are the outer edges of the border pixels);
    ``attention_weights`` (N, Q, heads, L, P). Returns (N, Q, heads * d): for every query and head, the
    weighted sum of the values bilinearly sampled at its points (zero outside a map)."""
    n, _, heads, d = value.shape
    _, q, _, levels, points, _ = sampling_locations.shape
    shapes = _shapes(spatial_shapes)
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1]
    sampled = []
    for lvl, (v, (h, w)) in enumerate(zip(value.split([h * w for h, w in shapes], dim=1), shapes)):
        # (N, h*w, heads, d) -> (N*heads, d, h, w)
        v = v.flatten(2).transpose(1, 2).reshape(n * heads, d, h, w)
        # (N, Q, heads, P, 2) -> (N*heads, Q, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    # (N*heads, d, Q, L*P) weighted by (N*heads, 1, Q, L*P)
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, q, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    return out.view(n, heads * d, q).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module: ``forward(query, reference_points, value, spatial_shapes)``.

    ``query`` (N, Q, C) (position embeddings already added), ``reference_points`` (N, Q, L, 2) in [0, 1],
    ``value`` (N, S, C) the flattened maps of ``spatial_shapes``; returns (N, Q, C). Sampling offsets are
    in cells of each level (divided by its (w, h))."""

    def __init__(self, dim: int = 256, num_levels: int = 4, num_heads: int = 8, num_points: int = 4):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MSDeformAttn dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_levels, self.num_heads, self.num_points = dim, num_levels, num_heads, num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: offsets start on a ring of directions, one per head."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, self.num_levels, self.num_points, 1)
        grid *= torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value: torch.Tensor,
                spatial_shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        n, q, _ = query.shape
        shapes = _shapes(spatial_shapes)
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        v = self.value_proj(value).view(n, value.shape[1], heads, self.dim // heads)
        offsets = self.sampling_offsets(query).view(n, q, heads, levels, points, 2)
        weights = self.attention_weights(query).view(n, q, heads, levels * points).softmax(-1)
        weights = weights.view(n, q, heads, levels, points)
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return self.output_proj(multi_scale_deformable_attention(v, shapes, locations, weights))
