"""Segformer all-MLP head: per-level 1x1 projection, upsample to the finest level, fuse, classify.

``proj="conv"`` projects with ConvNormAct (SSSegmentation / mmseg); ``proj="linear"`` with a
biased 1x1 conv and no norm (the original Segformer MLP, as in transformers).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct, resize
from .base import DecodeHead, register_head


@register_head("segformer")
class SegformerHead(DecodeHead):
    def __init__(self, in_channels, num_classes, channels=256, in_index=(0, 1, 2, 3), proj="conv",
                 dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, list(in_index), dropout, align_corners)
        if proj not in ("conv", "linear"):
            raise ValueError(f"proj must be 'conv' or 'linear', got {proj!r}")
        norm = proj == "conv"
        self.proj = nn.ModuleList(ConvNormAct(c, channels, 1, norm=norm, act=norm) for c in self.in_channels)
        self.fuse = ConvNormAct(channels * len(self.in_channels), channels, 1)

    def forward(self, feats) -> torch.Tensor:
        xs = self.select(feats)
        size = xs[0].shape[-2:]
        outs = [resize(p(x), size, self.align_corners) for p, x in zip(self.proj, xs)]
        return self.classify(self.fuse(torch.cat(outs, dim=1)))
