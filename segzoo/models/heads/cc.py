"""CCNet head: criss-cross attention, applied ``recurrence`` times with shared weights between two
3x3 ConvNormAct, its output concatenated with the backbone features and fused by a 3x3
ConvNormAct; then the classifier.

:func:`criss_cross_attention` is the operator (mmcv's ``CrissCrossAttention``, whose compiled
and pure-PyTorch versions agree): each pixel attends to the pixels of its row and its column,
itself counted once.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..foreign import check_options, cna_rules, head_options, ssseg_segmentor
from ..layers import ConvNormAct
from .base import DecodeHead, register_head

__all__ = ["criss_cross_attention", "CrissCrossAttention", "CCHead"]


def criss_cross_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Criss-cross attention (N, C', H, W) of ``query`` (N, C, H, W) over ``key`` (N, C, H, W):
    for each pixel, a softmax over the dot products of its query with the keys of the H + W - 1
    pixels of its row and column (the pixel itself once), and the sum of their ``value`` rows
    (N, C', H, W) weighted by it."""
    h = query.shape[2]
    energy_col = torch.einsum("nchw,nciw->nhwi", query, key)     # pixel (h, w) vs (i, w)
    self_in_col = torch.eye(h, dtype=torch.bool, device=query.device).view(h, 1, h)
    energy_col = energy_col.masked_fill(self_in_col, float("-inf"))  # counted in its row instead
    energy_row = torch.einsum("nchw,nchj->nhwj", query, key)     # pixel (h, w) vs (h, j)
    attn = torch.cat([energy_col, energy_row], dim=-1).softmax(dim=-1)
    out = torch.einsum("nciw,nhwi->nchw", value, attn[..., :h])
    return out + torch.einsum("nchj,nhwj->nchw", value, attn[..., h:])


class CrissCrossAttention(nn.Module):
    """mmcv's ``CrissCrossAttention`` module: 1x1 query and key projections to ``channels // 8``,
    a 1x1 value projection, :func:`criss_cross_attention`, and the result scaled by the learnt
    ``gamma`` (0 at initialisation) added to the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // 8, 1)
        self.key_conv = nn.Conv2d(channels, channels // 8, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = criss_cross_attention(self.query_conv(x), self.key_conv(x), self.value_conv(x))
        return out * self.gamma + x


@register_head("cc")
class CCHead(DecodeHead):
    """``recurrence``: how many times the (one) criss-cross attention runs; two reach every pixel."""

    def __init__(self, in_channels, num_classes, channels=512, recurrence=2, in_index=-1, dropout=0.1,
                 align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.recurrence = recurrence
        self.in_conv = ConvNormAct(self.in_channels, channels, 3)
        self.cca = CrissCrossAttention(channels)
        self.out_conv = ConvNormAct(channels, channels, 3)
        self.bottleneck = ConvNormAct(self.in_channels + channels, channels, 3)

    def forward(self, feats) -> torch.Tensor:
        x = self.select(feats)
        y = self.in_conv(x)
        for _ in range(self.recurrence):
            y = self.cca(y)
        y = self.out_conv(y)
        return self.classify(self.bottleneck(torch.cat([x, y], dim=1)))


# ---- SSSegmentation ---------------------------------------------------------------------------------
_CC_OPTIONS = {"in_channels", "feats_channels", "dropout", "num_recurrence"}


@ssseg_segmentor("CCNet", "ccnet", [
    *cna_rules(r"conv_before_cca", "decode_head.in_conv"),
    (r"^cca\.gamma\.scale$", "decode_head.cca.gamma"),
    (r"^cca\.", "decode_head.cca."),
    *cna_rules(r"conv_after_cca", "decode_head.out_conv"),
    *cna_rules(r"decoder", "decode_head.bottleneck"),
    (r"^decoder\.4\.", "decode_head.classifier.")])
def from_ssseg(cfg: dict, sel: list) -> dict:
    head = cfg["head"]
    check_options(head, _CC_OPTIONS, "CCNet head")
    return {"type": "cc", "in_index": sel[-1], "recurrence": int(head["num_recurrence"]), **head_options(cfg)}
