"""UPerNet head: pyramid pooling on the deepest map, an FPN over the rest, fused at the finest scale."""
from __future__ import annotations

import re

import torch
import torch.nn as nn

from ..backbones import backbone_family
from ..layers import ConvNormAct, PyramidPooling, resize
from ..foreign import cna_rules, head_options, ssseg_segmentor, transformers_segmentor
from .base import DecodeHead, register_head
from .psp import ssseg_ppm_rules


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


# ---- SSSegmentation ---------------------------------------------------------------------------------
@ssseg_segmentor("UPerNet", "upernet", ssseg_ppm_rules("decode_head.ppm") + [
    *cna_rules(r"lateral_convs\.(\d+)", r"decode_head.lateral_convs.\1"),
    *cna_rules(r"fpn_convs\.(\d+)", r"decode_head.fpn_convs.\1"),
    *cna_rules(r"decoder", "decode_head.fpn_bottleneck"), (r"^decoder\.4\.", "decode_head.classifier.")])
def from_ssseg(cfg: dict, sel: list) -> dict:
    return {"type": "uper", "in_index": sel, "pool_scales": list(cfg["head"]["pool_scales"]), **head_options(cfg)}


# ---- transformers (UperNetForSemanticSegmentation) ------------------------------------------------------
_TRANSFORMERS_RULES = [
    (r"^decode_head\.psp_modules\.(\d+)\.1\.", r"decode_head.ppm.stages.\1."),
    (r"^decode_head\.bottleneck\.", "decode_head.ppm.bottleneck."),
    (r"^auxiliary_head\.", "aux_heads.0."),
]


@transformers_segmentor("upernet")
def from_transformers(sd: dict, arch: dict) -> tuple[dict, dict]:
    split = getattr(backbone_family(arch["backbone"]["type"]), "split_transformers", None)
    if split is not None:  # a backbone with its own *ForSemanticSegmentation layout (BEiT)
        return split(sd, arch)
    backbone = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    rest = {}
    for key, value in sd.items():
        if not key.startswith("backbone."):
            for pattern, repl in _TRANSFORMERS_RULES:  # every rule applies (the aux head's bottleneck too)
                key = re.sub(pattern, repl, key)
            rest[key.replace(".batch_norm.", ".bn.")] = value
    return backbone, rest
