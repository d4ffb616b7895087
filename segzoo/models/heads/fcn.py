"""FCN head: a stack of 3x3 ConvNormAct then the classifier. Also the auxiliary head used in training."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct
from .base import DecodeHead, register_head


@register_head("fcn")
class FCNHead(DecodeHead):
    def __init__(self, in_channels, num_classes, channels=512, num_convs=2, kernel_size=3, in_index=-1,
                 dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels if num_convs > 0 else in_channels[in_index], num_classes,
                         in_index, dropout, align_corners)
        chans = [self.in_channels] + [channels] * num_convs
        self.convs = nn.Sequential(*(ConvNormAct(chans[i], chans[i + 1], kernel_size) for i in range(num_convs)))

    def forward(self, feats) -> torch.Tensor:
        return self.classify(self.convs(self.select(feats)))
