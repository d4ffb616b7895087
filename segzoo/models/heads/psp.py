"""PSPNet head: pyramid pooling module then the classifier."""
from __future__ import annotations

from ..layers import PyramidPooling
from .base import DecodeHead, register_head


@register_head("psp")
class PSPHead(DecodeHead):
    def __init__(self, in_channels, num_classes, channels=512, pool_scales=(1, 2, 3, 6), in_index=-1,
                 dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.ppm = PyramidPooling(self.in_channels, channels, pool_scales, align_corners)

    def forward(self, feats):
        return self.classify(self.ppm(self.select(feats)))
