"""UPerNet head: pyramid pooling on the deepest map, an FPN over the rest, fused at the finest scale."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct, PyramidPooling, resize
from .base import DecodeHead, register_head


@register_head("uper")
class UPerHead(DecodeHead):
    def __init__(self, in_channels, num_classes, channels=512, pool_scales=(1, 2, 3, 6), in_index=(0, 1, 2, 3),
                 dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, list(in_index), dropout, align_corners)
        chans = self.in_channels
        self.ppm = PyramidPooling(chans[-1], channels, pool_scales, align_corners)
        self.lateral_convs = nn.ModuleList(ConvNormAct(c, channels, 1) for c in chans[:-1])
        self.fpn_convs = nn.ModuleList(ConvNormAct(channels, channels, 3) for _ in chans[:-1])
        self.fpn_bottleneck = ConvNormAct(channels * len(chans), channels, 3)

    def forward(self, feats) -> torch.Tensor:
        xs = self.select(feats)
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, xs)]
        laterals.append(self.ppm(xs[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[-2:], self.align_corners)
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [resize(o, size, self.align_corners) for o in outs[1:]]
        return self.classify(self.fpn_bottleneck(torch.cat(outs, dim=1)))
