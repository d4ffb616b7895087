"""DeepLabV3 head (ASPP) and DeepLabV3+ head (separable ASPP + low-level shortcut decoder)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ASPP, ConvNormAct, SeparableConvNormAct, resize
from ..foreign import cna_rules, dsconv_rules, head_options, ssseg_segmentor
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


# ---- SSSegmentation ---------------------------------------------------------------------------------
_ASPP_RULES = [*cna_rules(r"aspp_net\.parallel_branches\.(\d+)", r"decode_head.aspp.branches.\1"),
               (r"^aspp_net\.global_branch\.1\.", "decode_head.aspp.image_pool.conv."),
               (r"^aspp_net\.global_branch\.2\.", "decode_head.aspp.image_pool.bn."),
               *cna_rules(r"aspp_net\.bottleneck", "decode_head.aspp.bottleneck")]


@ssseg_segmentor("Deeplabv3", "deeplabv3", _ASPP_RULES + [(r"^decoder\.1\.", "decode_head.classifier.")])
def from_ssseg(cfg: dict, sel: list) -> dict:
    return {"type": "aspp", "in_index": sel[-1], "dilations": list(cfg["head"]["dilations"]), **head_options(cfg)}


@ssseg_segmentor("Deeplabv3Plus", "deeplabv3plus", [
    *dsconv_rules(r"aspp_net\.parallel_branches\.(\d+)", r"decode_head.aspp.branches.\1"), *_ASPP_RULES,
    *cna_rules("shortcut", "decode_head.low_level"), *dsconv_rules(r"decoder\.(\d)", r"decode_head.fuse.\1"),
    (r"^decoder\.3\.", "decode_head.classifier.")])
def plus_from_ssseg(cfg: dict, sel: list) -> dict:
    return {"type": "aspp", "in_index": sel[-1], "dilations": list(cfg["head"]["dilations"]), "separable": True,
            "low_level_index": sel[0], "low_level_channels": int(cfg["head"]["shortcut_channels"]),
            **head_options(cfg)}
