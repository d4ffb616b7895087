"""DMNet head (dynamic multi-scale filters): one dynamic convolutional module per filter size,
each filtering the reduced features depthwise with a k x k filter generated, per image and
channel, from the input pooled to k x k; the input and the modules' outputs are concatenated and
fused by a 3x3 ConvNormAct, then classified.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..foreign import check_options, cna_rules, head_options, ssseg_segmentor
from ..layers import ConvNormAct, adaptive_avg_pool
from .base import DecodeHead, register_head

__all__ = ["dynamic_depthwise_conv", "DynamicConv", "DMHead"]


def dynamic_depthwise_conv(x: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Each image's channel ``x[b, c]`` (N, C, H, W) correlated with its own k x k filter
    ``filters[b, c]`` (N, C, k, k), zero padded to keep H x W (for an even k, the extra row and
    column of padding go on the top and the left)."""
    n, c, h, w = x.shape
    k = filters.shape[-1]
    pad = (k - 1) // 2
    x = F.pad(x, (pad, pad, pad, pad) if k % 2 else (pad + 1, pad, pad + 1, pad))
    out = F.conv2d(x.reshape(1, n * c, *x.shape[-2:]), filters.reshape(n * c, 1, k, k), groups=n * c)
    return out.reshape(n, c, h, w)


class DynamicConv(nn.Module):
    """Dynamic convolutional module of ``filter_size`` k: filters from a 1x1 conv of the input
    pooled to k x k, applied to a 1x1 ConvNormAct reduction of the input, then BatchNorm + ReLU
    (and, ``fusion``, a 1x1 ConvNormAct)."""

    def __init__(self, in_channels: int, channels: int, filter_size: int, fusion: bool = False):
        super().__init__()
        self.filter_size = filter_size
        self.filter_gen_conv = nn.Conv2d(in_channels, channels, 1)
        self.input_redu_conv = ConvNormAct(in_channels, channels, 1)
        self.norm = nn.BatchNorm2d(channels)
        self.act = nn.ReLU(inplace=True)
        self.fusion_conv = ConvNormAct(channels, channels, 1) if fusion else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        filters = self.filter_gen_conv(adaptive_avg_pool(x, self.filter_size))
        out = self.act(self.norm(dynamic_depthwise_conv(self.input_redu_conv(x), filters)))
        return self.fusion_conv(out) if self.fusion_conv is not None else out


@register_head("dm")
class DMHead(DecodeHead):
    """``filter_sizes``: one dynamic module per size; ``fusion``: each module ends in a 1x1 ConvNormAct."""

    def __init__(self, in_channels, num_classes, channels=512, filter_sizes: Sequence[int] = (1, 3, 5, 7),
                 fusion=False, in_index=-1, dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.dcms = nn.ModuleList(DynamicConv(self.in_channels, channels, k, fusion) for k in filter_sizes)
        self.bottleneck = ConvNormAct(self.in_channels + channels * len(filter_sizes), channels, 3)

    def forward(self, feats) -> torch.Tensor:
        x = self.select(feats)
        return self.classify(self.bottleneck(torch.cat([x, *(m(x) for m in self.dcms)], dim=1)))


# ---- SSSegmentation (DMNet) -------------------------------------------------------------------------
_DCM = r"dcm_modules\.(\d+)"
_DM_OPTIONS = {"in_channels", "feats_channels", "filter_sizes", "is_fusion", "dropout"}


@ssseg_segmentor("DMNet", "dmnet", [
    (rf"^{_DCM}\.filter_gen_conv\.", r"decode_head.dcms.\1.filter_gen_conv."),
    *cna_rules(rf"{_DCM}\.input_redu_conv", r"decode_head.dcms.\1.input_redu_conv"),
    (rf"^{_DCM}\.norm\.", r"decode_head.dcms.\1.norm."),
    *cna_rules(rf"{_DCM}\.fusion_conv", r"decode_head.dcms.\1.fusion_conv"),
    *cna_rules(r"decoder", "decode_head.bottleneck"), (r"^decoder\.4\.", "decode_head.classifier.")])
def from_ssseg(cfg: dict, sel: list) -> dict:
    head = cfg["head"]
    check_options(head, _DM_OPTIONS, "DMNet head")
    return {"type": "dm", "in_index": sel[-1], "filter_sizes": [int(k) for k in head["filter_sizes"]],
            "fusion": bool(head.get("is_fusion", False)), **head_options(cfg)}
