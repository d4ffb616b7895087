"""OCR head (object-contextual representations, OCRNet): pixel features, object-region
representations gathered from them by soft object regions, and an object-context attention
block that augments each pixel with the regions it attends to; then the classifier.

The soft object regions (N, K, h, w) come from outside the head (OCRNet's auxiliary FCN head,
see ``segzoo.models.ocrnet``), so ``forward`` takes ``(feats, soft_regions)``. ``in_index`` /
``in_channels`` say which backbone map carries the pixel features (ResNet's last stage; HRNet's
concatenated branches).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct, SelfAttention
from .base import DecodeHead, register_head

__all__ = ["spatial_gather", "ObjectContextBlock", "OCRHead"]


def spatial_gather(feats: torch.Tensor, soft_regions: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Object-region representations (N, C, K, 1): the pixel features ``feats`` (N, C, h, w)
    averaged over each of the K soft regions (N, K, h, w), weighted by the softmax over the
    pixels of ``scale * soft_regions``."""
    weights = (scale * soft_regions.flatten(2)).softmax(dim=2)          # (n, k, hw)
    regions = torch.matmul(weights, feats.flatten(2).transpose(1, 2))   # (n, k, c)
    return regions.transpose(1, 2).unsqueeze(3)


class ObjectContextBlock(nn.Module):
    """Each pixel attends to the object-region representations (two-conv query/key projections,
    one-conv value/out projections, all with norm); the context is concatenated with the pixel
    features and fused by a 3x3 ConvNormAct."""

    def __init__(self, channels: int, transform_channels: int):
        super().__init__()
        self.attention = SelfAttention(channels, channels, transform_channels, channels, key_query_num_convs=2,
                                       value_out_num_convs=1, matmul_norm=True, with_out_project=True)
        self.bottleneck = ConvNormAct(channels * 2, channels, 3)

    def forward(self, pixels: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        context = self.attention(pixels, regions)
        return self.bottleneck(torch.cat([context, pixels], dim=1))


@register_head("ocr")
class OCRHead(DecodeHead):
    """``scale``: the sharpness of the soft regions' softmax in the spatial gather."""

    def __init__(self, in_channels, num_classes, channels=512, transform_channels=256, scale=1.0, in_index=-1,
                 dropout=0.0, align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.scale = scale
        self.bottleneck = ConvNormAct(self.in_channels, channels, 3)
        self.object_context = ObjectContextBlock(channels, transform_channels)

    def forward(self, feats, soft_regions: torch.Tensor) -> torch.Tensor:
        pixels = self.bottleneck(self.select(feats))
        regions = spatial_gather(pixels, soft_regions, self.scale)
        return self.classify(self.object_context(pixels, regions))
