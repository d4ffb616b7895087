"""DeepLabV3 head (ASPP) and DeepLabV3+ head (separable ASPP + low-level shortcut decoder)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ASPP, ConvNormAct, SeparableConvNormAct, resize
from .base import DecodeHead, register_head


@register_head("aspp")
class ASPPHead(DecodeHead):
    """DeepLabV3 when ``low_level_index`` is None; DeepLabV3+ otherwise."""

    def __init__(self, in_channels, num_classes, channels=512, dilations=(1, 12, 24, 36), in_index=-1,
                 separable=False, low_level_index=None, low_level_channels=48, dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.aspp = ASPP(self.in_channels, channels, dilations, separable=separable, align_corners=align_corners)
        self.low_level_index = low_level_index
        if low_level_index is not None:
            self.low_level = ConvNormAct(in_channels[low_level_index], low_level_channels, 1)
            self.fuse = nn.Sequential(
                SeparableConvNormAct(channels + low_level_channels, channels, 3),
                SeparableConvNormAct(channels, channels, 3),
            )

    def forward(self, feats) -> torch.Tensor:
        x = self.aspp(self.select(feats))
        if self.low_level_index is not None:
            low = feats[self.low_level_index]
            x = torch.cat([resize(x, low.shape[-2:], self.align_corners), self.low_level(low)], dim=1)
            x = self.fuse(x)
        return self.classify(x)
