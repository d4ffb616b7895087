"""ISANet head (interlaced sparse self-attention): a 3x3 ConvNormAct, then self-attention within
each group of pixels one ``down_factor`` stride apart (long range), then within each
``down_factor`` block (short range); the result, concatenated with its input, fused by a 3x3
ConvNormAct; then the classifier. Maps that ``down_factor`` does not divide are zero-padded
(evenly, the extra row / column after) for the attention and cropped back.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..foreign import check_options, cna_rules, head_options, ssseg_segmentor
from ..layers import ConvNormAct, SelfAttention
from .base import DecodeHead, register_head

__all__ = ["ISARelation", "ISAHead"]


class ISARelation(nn.Module):
    """Self-attention among the pixels of each map (two-conv query/key projections with norm to
    ``transform_channels``, a norm-free 1x1 value projection, scaled dot products), then a 1x1
    ConvNormAct."""

    def __init__(self, channels: int, transform_channels: int):
        super().__init__()
        self.attention = SelfAttention(channels, channels, transform_channels, channels, key_query_num_convs=2,
                                       value_out_num_convs=1, key_query_norm=True, value_out_norm=False,
                                       matmul_norm=True, with_out_project=False)
        self.out_project = ConvNormAct(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_project(self.attention(x, x))


@register_head("isa")
class ISAHead(DecodeHead):
    """``down_factor``: (h, w) size of the short-range blocks (= stride of the long-range groups)."""

    def __init__(self, in_channels, num_classes, channels=512, isa_channels=256, down_factor=(8, 8), in_index=-1,
                 dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.down_factor = tuple(int(d) for d in down_factor)
        self.in_conv = ConvNormAct(self.in_channels, channels, 3)
        self.global_relation = ISARelation(channels, isa_channels)
        self.local_relation = ISARelation(channels, isa_channels)
        self.out_conv = ConvNormAct(channels * 2, channels, 3)

    def forward(self, feats) -> torch.Tensor:
        x = self.in_conv(self.select(feats))
        n, c, h, w = x.shape
        loc_h, loc_w = self.down_factor
        glb_h, glb_w = math.ceil(h / loc_h), math.ceil(w / loc_w)
        pad_h, pad_w = glb_h * loc_h - h, glb_w * loc_w - w
        y = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)) if pad_h or pad_w else x
        # long range: the pixels sharing their position within the blocks
        y = y.reshape(n, c, glb_h, loc_h, glb_w, loc_w).permute(0, 3, 5, 1, 2, 4).reshape(-1, c, glb_h, glb_w)
        y = self.global_relation(y)
        # short range: the pixels of each block
        y = y.reshape(n, loc_h, loc_w, c, glb_h, glb_w).permute(0, 4, 5, 3, 1, 2).reshape(-1, c, loc_h, loc_w)
        y = self.local_relation(y)
        y = y.reshape(n, glb_h, glb_w, c, loc_h, loc_w).permute(0, 3, 1, 4, 2, 5).reshape(n, c, glb_h * loc_h,
                                                                                         glb_w * loc_w)
        if pad_h or pad_w:
            y = y[:, :, pad_h // 2:pad_h // 2 + h, pad_w // 2:pad_w // 2 + w]
        return self.classify(self.out_conv(torch.cat([y, x], dim=1)))


# ---- SSSegmentation ---------------------------------------------------------------------------------
_ISA_OPTIONS = {"in_channels", "feats_channels", "isa_channels", "down_factor", "dropout"}


def _relation_rules(name: str) -> list[tuple[str, str]]:
    """SSSegmentation's ISANet ``SelfAttentionBlock`` at ``name`` -> :class:`ISARelation`."""
    dst = f"decode_head.{name}"
    return [*cna_rules(rf"{name}\.(key|query)_project\.(\d+)", rf"{dst}.attention.\1_project.\2"),
            (rf"^{name}\.value_project\.weight$", f"{dst}.attention.value_project.0.conv.weight"),
            *cna_rules(rf"{name}\.output_project", f"{dst}.out_project")]


@ssseg_segmentor("ISANet", "isanet", [
    *cna_rules(r"in_conv", "decode_head.in_conv"), *_relation_rules("global_relation"),
    *_relation_rules("local_relation"), *cna_rules(r"out_conv", "decode_head.out_conv"),
    (r"^decoder\.1\.", "decode_head.classifier.")])
def from_ssseg(cfg: dict, sel: list) -> dict:
    head = cfg["head"]
    check_options(head, _ISA_OPTIONS, "ISANet head")
    return {"type": "isa", "in_index": sel[-1], "isa_channels": int(head["isa_channels"]),
            "down_factor": [int(d) for d in head["down_factor"]], **head_options(cfg)}
