"""MobileSAM's image encoder: TinyViT (a conv stage of MBConv blocks, then windowed-attention stages
with a depthwise "local" conv between attention and MLP) ending at 1/16 of the input, with SAM's neck.

Native rather than timm's ``tiny_vit_*``: MobileSAM's variant differs from timm's (its last patch
merging keeps the resolution, so the encoder ends at 1/16 rather than 1/32, and it has SAM's neck
instead of a classifier; timm's also names its modules differently). The keys are MobileSAM's
(``mobile_sam.pt`` less the unused classifier ``norm_head``/``head``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import LayerNorm2d

__all__ = ["TinyViTImageEncoder"]


class ConvBN(nn.Sequential):
    """Conv (no bias) + BatchNorm, as ``c`` and ``bn``."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 ConvBN with GELU between: 1/4 resolution."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_chans, dim // 2, 3, 2, 1), nn.GELU(), ConvBN(dim // 2, dim, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, GELU after the residual sum."""

    def __init__(self, dim: int, expand_ratio: float):
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return self.act3(x + y)


class PatchMerging(nn.Module):
    """1x1 ConvBN, 3x3 depthwise ConvBN (stride ``stride``), 1x1 ConvBN, GELU between; NCHW in, tokens out."""

    def __init__(self, dim: int, out_dim: int, stride: int):
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class Attention(nn.Module):
    """Windowed multi-head attention with a learnt bias per head and |dy|, |dx| offset (LeViT style);
    the input LayerNorm is part of it."""

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.scale = self.key_dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        side = torch.arange(window_size)
        pos = torch.stack(torch.meshgrid(side, side, indexing="ij")).flatten(1)
        offset = (pos[:, :, None] - pos[:, None, :]).abs()
        self.register_buffer("attention_bias_idxs", offset[0] * window_size + offset[1], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, n, self.num_heads, -1).split(self.key_dim, dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj(out)


class Mlp(nn.Module):
    """LayerNorm, fc1, GELU, fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (zero-padded to whole windows), residual, depthwise ConvBN, MLP residual."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int):
        super().__init__()
        self.window_size = window_size
        self.attn = Attention(dim, num_heads, window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        h, w = hw
        b, n, c = x.shape
        ws = self.window_size
        if h == ws and w == ws:
            y = self.attn(x)
        else:
            y = x.view(b, h, w, c)
            pb, pr = (ws - h % ws) % ws, (ws - w % ws) % ws
            if pb or pr:
                y = F.pad(y, (0, 0, 0, pr, 0, pb))
            ph, pw = h + pb, w + pr
            nh, nw = ph // ws, pw // ws
            y = y.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
            y = self.attn(y).view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
            if pb or pr:
                y = y[:, :h, :w].contiguous()
            y = y.view(b, n, c)
        x = x + y
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class ConvLayer(nn.Module):
    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor):
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x)


class BasicLayer(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 local_conv_size: int, downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, num_heads, window_size, mlp_ratio, local_conv_size)
                                    for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor, hw: tuple[int, int]):
        for blk in self.blocks:
            x = blk(x, hw)
        if self.downsample is None:
            return x, hw
        return self.downsample(x.transpose(1, 2).reshape(x.shape[0], -1, *hw))


class TinyViTImageEncoder(nn.Module):
    """(B, 3, img_size, img_size) normalised, padded images -> (B, out_chans, img_size/16, img_size/16).
    Patch merging halves the resolution after every stage but the last, which keeps it (MobileSAM)."""

    def __init__(self, img_size: int = 1024, in_chans: int = 3, embed_dims: Sequence[int] = (64, 128, 160, 320),
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (2, 4, 5, 10),
                 window_sizes: Sequence[int] = (7, 7, 14, 7), mlp_ratio: float = 4.0, mbconv_expand_ratio: float = 4.0,
                 local_conv_size: int = 3, out_chans: int = 256):
        super().__init__()
        self.img_size = img_size
        n = len(depths)
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])

        def merge(i):
            if i == n - 1:
                return None
            return PatchMerging(embed_dims[i], embed_dims[i + 1], 1 if i == n - 2 else 2)

        self.layers = nn.ModuleList(
            [ConvLayer(embed_dims[0], depths[0], mbconv_expand_ratio, merge(0))]
            + [BasicLayer(embed_dims[i], depths[i], num_heads[i], window_sizes[i], mlp_ratio, local_conv_size, merge(i))
               for i in range(1, n)])
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False), LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False), LayerNorm2d(out_chans))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, hw = self.layers[0](self.patch_embed(x))
        for layer in self.layers[1:]:
            x, hw = layer(x, hw)
        return self.neck(x.transpose(1, 2).reshape(x.shape[0], -1, *hw))
