"""APCNet head (adaptive pyramid context): one adaptive context module per pool scale, each
aggregating the s x s pooled map into every pixel with pixel-adaptive (sigmoid) affinities; the
input and the modules' outputs are concatenated and fused by a 3x3 ConvNormAct, then classified.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..foreign import check_options, cna_rules, head_options, ssseg_segmentor
from ..layers import ConvNormAct, adaptive_avg_pool, resize
from .base import DecodeHead, register_head

__all__ = ["AdaptiveContext", "APCHead"]


class AdaptiveContext(nn.Module):
    """Adaptive context module at ``pool_scale`` s: the affinity of each pixel to the s*s pooled
    regions is a sigmoid of a 1x1 conv (``gla``) of the reduced pixel features plus the reduced
    global context; the regions' reduced features, weighted by it, pass a 1x1 ConvNormAct, are
    added to the reduced pixels (ReLU) and pass a last 1x1 ConvNormAct."""

    def __init__(self, in_channels: int, channels: int, pool_scale: int, align_corners: bool = False):
        super().__init__()
        self.pool_scale = pool_scale
        self.align_corners = align_corners
        self.pooled_redu_conv = ConvNormAct(in_channels, channels, 1)
        self.input_redu_conv = ConvNormAct(in_channels, channels, 1)
        self.global_info = ConvNormAct(channels, channels, 1)
        self.gla = nn.Conv2d(channels, pool_scale ** 2, 1)
        self.residual_conv = ConvNormAct(channels, channels, 1)
        self.fusion_conv = ConvNormAct(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        regions = self.pooled_redu_conv(adaptive_avg_pool(x, self.pool_scale)).flatten(2).transpose(1, 2)  # (n, s*s, c)
        x = self.input_redu_conv(x)
        h, w = x.shape[-2:]
        context = resize(self.global_info(adaptive_avg_pool(x, 1)), (h, w), self.align_corners)
        affinity = torch.sigmoid(self.gla(x + context).flatten(2).transpose(1, 2))  # (n, hw, s*s)
        z = torch.bmm(affinity, regions).transpose(1, 2).reshape(n, -1, h, w)
        return self.fusion_conv(torch.relu(self.residual_conv(z) + x))


@register_head("apc")
class APCHead(DecodeHead):
    def __init__(self, in_channels, num_classes, channels=512, pool_scales: Sequence[int] = (1, 2, 3, 6), in_index=-1,
                 dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.acms = nn.ModuleList(AdaptiveContext(self.in_channels, channels, s, align_corners) for s in pool_scales)
        self.bottleneck = ConvNormAct(self.in_channels + channels * len(pool_scales), channels, 3)

    def forward(self, feats) -> torch.Tensor:
        x = self.select(feats)
        return self.classify(self.bottleneck(torch.cat([x, *(m(x) for m in self.acms)], dim=1)))


# ---- SSSegmentation (APCNet) ------------------------------------------------------------------------
_ACM = r"acm_modules\.(\d+)"
_APC_OPTIONS = {"in_channels", "feats_channels", "pool_scales", "dropout"}


@ssseg_segmentor("APCNet", "apcnet", [
    *(r for name in ("pooled_redu_conv", "input_redu_conv", "global_info", "residual_conv", "fusion_conv")
      for r in cna_rules(rf"{_ACM}\.{name}", rf"decode_head.acms.\1.{name}")),
    (rf"^{_ACM}\.gla\.", r"decode_head.acms.\1.gla."),
    *cna_rules(r"decoder", "decode_head.bottleneck"), (r"^decoder\.4\.", "decode_head.classifier.")])
def from_ssseg(cfg: dict, sel: list) -> dict:
    head = cfg["head"]
    check_options(head, _APC_OPTIONS, "APCNet head")
    return {"type": "apc", "in_index": sel[-1], "pool_scales": [int(s) for s in head["pool_scales"]],
            **head_options(cfg)}
