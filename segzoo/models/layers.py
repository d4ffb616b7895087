"""Blocks shared by every head and segmentor: one implementation each."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["adaptive_avg_pool", "ConvNormAct", "SeparableConvNormAct", "PyramidPooling", "ASPP", "SelfAttention",
           "resize"]


def resize(x: torch.Tensor, size, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of a feature map to ``size`` (h, w)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def adaptive_avg_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)``, the same kernel called by its internal name: a traced
    graph then keeps it out of TorchScript's oneDNN conversion, whose adaptive pooling refuses
    input sizes the bins do not divide (PSPNet and UPerNet on most window sizes)."""
    return torch.ops.aten._adaptive_avg_pool2d(x, [size, size])


class ConvNormAct(nn.Sequential):
    """Conv2d -> BatchNorm2d -> ReLU; ``norm=False`` / ``act=False`` drop the last two."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int | None = None, dilation: int = 1, groups: int = 1, bias: bool | None = None,
                 norm: bool = True, act: bool = True):
        super().__init__()
        if padding is None:
            padding = (kernel_size // 2) * dilation
        if bias is None:
            bias = not norm
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=bias)
        if norm:
            self.bn = nn.BatchNorm2d(out_channels)
        if act:
            self.act = nn.ReLU(inplace=True)


class SeparableConvNormAct(nn.Sequential):
    """Depthwise ConvNormAct followed by a pointwise ConvNormAct (DeepLabV3+ style)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1):
        super().__init__()
        self.depthwise = ConvNormAct(in_channels, in_channels, kernel_size, dilation=dilation, groups=in_channels)
        self.pointwise = ConvNormAct(in_channels, out_channels, 1)


class PyramidPooling(nn.Module):
    """Pyramid pooling module (PSPNet): pooled branches concatenated with the input, then a 3x3 bottleneck."""

    def __init__(self, in_channels: int, channels: int, pool_scales: Sequence[int] = (1, 2, 3, 6),
                 align_corners: bool = False):
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        self.align_corners = align_corners
        self.stages = nn.ModuleList(ConvNormAct(in_channels, channels, 1) for _ in self.pool_scales)
        self.bottleneck = ConvNormAct(in_channels + channels * len(self.pool_scales), channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [x]
        for scale, stage in zip(self.pool_scales, self.stages):
            outs.append(resize(stage(adaptive_avg_pool(x, scale)), size, self.align_corners))
        return self.bottleneck(torch.cat(outs, dim=1))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: parallel dilated branches plus image pooling, fused by a 3x3 conv."""

    def __init__(self, in_channels: int, channels: int, dilations: Sequence[int] = (1, 12, 24, 36),
                 separable: bool = False, align_corners: bool = False):
        super().__init__()
        self.align_corners = align_corners
        branches = []
        for d in dilations:
            if d == 1:
                branches.append(ConvNormAct(in_channels, channels, 1))
            elif separable:
                branches.append(SeparableConvNormAct(in_channels, channels, 3, dilation=d))
            else:
                branches.append(ConvNormAct(in_channels, channels, 3, dilation=d))
        self.branches = nn.ModuleList(branches)
        self.image_pool = ConvNormAct(in_channels, channels, 1)
        self.bottleneck = ConvNormAct(channels * (len(dilations) + 1), channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        pooled = self.image_pool(adaptive_avg_pool(x, 1))
        outs.append(resize(pooled, x.shape[-2:], self.align_corners))
        return self.bottleneck(torch.cat(outs, dim=1))


def pyramid_pool_concat(x: torch.Tensor, pool_scales) -> torch.Tensor:
    """(N, C, sum of s*s): ``x`` (N, C, h, w) average-pooled to each s x s grid, flattened and concatenated."""
    return torch.cat([adaptive_avg_pool(x, s).flatten(2) for s in pool_scales], dim=2)


class SelfAttention(nn.Module):
    """Non-local attention of query positions over key positions (SSSegmentation's / mmseg's
    ``SelfAttentionBlock``): 1x1 projections of query, key and value, softmax over the keys of
    their dot products (scaled by ``transform_channels ** -0.5`` when ``matmul_norm``), the
    attended values reshaped to the query's grid and, ``with_out_project``, projected to
    ``out_channels``. Each projection is a Sequential of ``num_convs`` 1x1 ConvNormAct (conv alone,
    bias-free, when its ``*_norm`` is False). ``key_pool_scales``: keys and values are the projected
    key map pyramid-pooled (:func:`pyramid_pool_concat`), so each query attends to ``sum(s * s)``
    pooled cells (ANN; the reference's ``key_downsample`` with PPMConcat). (The reference's query
    downsampling is not ported: no registered config uses it.)"""

    def __init__(self, key_in_channels: int, query_in_channels: int, transform_channels: int, out_channels: int,
                 share_key_query: bool = False, key_query_num_convs: int = 2, value_out_num_convs: int = 1,
                 key_query_norm: bool = True, value_out_norm: bool = True, matmul_norm: bool = True,
                 with_out_project: bool = True, key_pool_scales=None):
        super().__init__()
        self.key_pool_scales = tuple(key_pool_scales) if key_pool_scales else None
        if share_key_query and key_in_channels != query_in_channels:
            raise ValueError("share_key_query needs key_in_channels == query_in_channels")
        self.transform_channels = transform_channels
        self.matmul_norm = matmul_norm
        self.key_project = self._project(key_in_channels, transform_channels, key_query_num_convs, key_query_norm)
        self.query_project = self.key_project if share_key_query else \
            self._project(query_in_channels, transform_channels, key_query_num_convs, key_query_norm)
        self.value_project = self._project(key_in_channels, transform_channels if with_out_project else out_channels,
                                           value_out_num_convs, value_out_norm)
        self.out_project = self._project(transform_channels, out_channels, value_out_num_convs, value_out_norm) \
            if with_out_project else None

    @staticmethod
    def _project(in_channels: int, out_channels: int, num_convs: int, norm: bool) -> nn.Sequential:
        chans = [in_channels] + [out_channels] * num_convs
        return nn.Sequential(*(ConvNormAct(chans[i], chans[i + 1], 1, bias=False, norm=norm, act=norm)
                               for i in range(num_convs)))

    def forward(self, query_feats: torch.Tensor, key_feats: torch.Tensor) -> torch.Tensor:
        n = query_feats.shape[0]
        query = self.query_project(query_feats)
        key, value = self.key_project(key_feats), self.value_project(key_feats)
        query = query.flatten(2).transpose(1, 2)            # (n, q, c)
        if self.key_pool_scales:
            key, value = pyramid_pool_concat(key, self.key_pool_scales), pyramid_pool_concat(value, self.key_pool_scales)
        else:
            key, value = key.flatten(2), value.flatten(2)
        value = value.transpose(1, 2)                       # key (n, c, k), value (n, k, c')
        sim = torch.matmul(query, key)
        if self.matmul_norm:
            sim = sim * self.transform_channels ** -0.5
        context = torch.matmul(sim.softmax(dim=-1), value)  # (n, q, c')
        context = context.transpose(1, 2).reshape(n, -1, *query_feats.shape[2:])
        return self.out_project(context) if self.out_project is not None else context


def init_linear_trunc_normal(m: nn.Module) -> None:
    """The transformers' usual initialisation (``model.apply(...)``): Linear weights truncated
    normal (std 0.02), Linear biases zero."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
