"""DeepLabV3 head of transformers' ``MobileViTForSemanticSegmentation`` / ``MobileViTV2ForSemanticSegmentation``.

The ASPP of segzoo's ``aspp`` head (a 1x1 branch, three dilated 3x3 branches and image pooling, each
conv + BN + ReLU, pooled branch upsampled bilinearly) with what transformers' differs in: the
concatenated branches are fused by a **1x1** conv + BN + ReLU (the ``aspp`` head's bottleneck is
3x3), followed by a dropout (``aspp_dropout``) before the usual Dropout2d + 1x1 classifier. The
SSSegmentation DeepLabV3 configs on MobileViT use the plain ``aspp`` head (``heads/aspp.py``).
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn

from ..foreign import transformers_segmentor
from ..layers import ConvNormAct
from .aspp import ASPPHead
from .base import register_head

__all__ = ["MobileViTASPPHead", "from_transformers"]


@register_head("mobilevit_aspp")
class MobileViTASPPHead(ASPPHead):
    def __init__(self, in_channels, num_classes, channels=256, dilations=(1, 6, 12, 18), in_index=-1,
                 aspp_dropout=0.1, dropout=0.1, align_corners=False):
        super().__init__(in_channels, num_classes, channels=channels, dilations=dilations, in_index=in_index,
                         dropout=dropout, align_corners=align_corners)
        self.aspp.bottleneck = ConvNormAct(channels * (len(dilations) + 1), channels, 1)
        self.aspp_dropout = nn.Dropout(aspp_dropout) if aspp_dropout > 0 else nn.Identity()

    def forward(self, feats) -> torch.Tensor:
        return self.classify(self.aspp_dropout(self.aspp(self.select(feats))))


# ---- transformers (MobileViT(V2)ForSemanticSegmentation) ------------------------------------------------
_HEAD_RULES = [
    (r"^segmentation_head\.aspp\.convs\.(\d+)\.conv_1x1\.convolution\.", "decode_head.aspp.image_pool.conv."),
    (r"^segmentation_head\.aspp\.convs\.(\d+)\.conv_1x1\.normalization\.", "decode_head.aspp.image_pool.bn."),
    (r"^segmentation_head\.aspp\.convs\.(\d+)\.convolution\.", r"decode_head.aspp.branches.\1.conv."),
    (r"^segmentation_head\.aspp\.convs\.(\d+)\.normalization\.", r"decode_head.aspp.branches.\1.bn."),
    (r"^segmentation_head\.aspp\.project\.convolution\.", "decode_head.aspp.bottleneck.conv."),
    (r"^segmentation_head\.aspp\.project\.normalization\.", "decode_head.aspp.bottleneck.bn."),
    (r"^segmentation_head\.classifier\.convolution\.", "decode_head.classifier."),
]
_PREFIX = {"mobilevit": "mobilevit.", "mobilevitv2": "mobilevitv2."}


@transformers_segmentor("deeplabv3", key_prefixes=("mobilevit.", "mobilevitv2."))
def from_transformers(sd: dict, arch: dict) -> tuple[dict, dict]:
    """A transformers MobileViT / MobileViTV2 DeepLabV3 checkpoint: the backbone's keys (``mobilevit.``
    / ``mobilevitv2.`` stripped) and the head's, in segzoo's names."""
    kind = arch["backbone"]["type"]
    if kind not in _PREFIX:
        raise ValueError(f"transformers DeepLabV3 checkpoints are known for MobileViT(V2) backbones only, not {kind!r}")
    prefix = _PREFIX[kind]
    backbone, rest = {}, {}
    for key, value in sd.items():
        if key.startswith(prefix):
            backbone[key[len(prefix):]] = value
            continue
        for pattern, repl in _HEAD_RULES:
            new, n = re.subn(pattern, repl, key)
            if n:
                key = new
                break
        rest[key] = value
    return backbone, rest
