"""Segformer all-MLP head: per-level 1x1 projection, upsample to the finest level, fuse, classify.

``proj="conv"`` projects with ConvNormAct (SSSegmentation / mmseg); ``proj="linear"`` with a
biased 1x1 conv and no norm (the original Segformer MLP, as in transformers).
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn

from ..layers import ConvNormAct, resize
from ..backbones.mit import segformer_encoder
from ..foreign import cna_rules, head_options, ssseg_segmentor, transformers_segmentor
from .base import DecodeHead, register_head


@register_head("segformer")
class SegformerHead(DecodeHead):
    #: SSSegmentation's parameter-rule keys (its recipes' ``params_rules``) in this head's names:
    #: ``convs`` are the per-level projections, ``decoder`` the fusion and the classifier
    PARAM_RULE_KEYS = {"convs": ["proj."], "decoder": ["fuse.", "classifier."]}

    def __init__(self, in_channels, num_classes, channels=256, in_index=(0, 1, 2, 3), proj="conv",
                 dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, list(in_index), dropout, align_corners)
        if proj not in ("conv", "linear"):
            raise ValueError(f"proj must be 'conv' or 'linear', got {proj!r}")
        norm = proj == "conv"
        self.proj = nn.ModuleList(ConvNormAct(c, channels, 1, norm=norm, act=norm) for c in self.in_channels)
        self.fuse = ConvNormAct(channels * len(self.in_channels), channels, 1)

    def forward(self, feats) -> torch.Tensor:
        xs = self.select(feats)
        size = xs[0].shape[-2:]
        outs = [resize(p(x), size, self.align_corners) for p, x in zip(self.proj, xs)]
        return self.classify(self.fuse(torch.cat(outs, dim=1)))


# ---- SSSegmentation ---------------------------------------------------------------------------------
@ssseg_segmentor("Segformer", "segformer", [*cna_rules(r"convs\.(\d+)", r"decode_head.proj.\1"),
                                           *cna_rules(r"decoder", "decode_head.fuse"),
                                           (r"^decoder\.4\.", "decode_head.classifier.")])
def from_ssseg(cfg: dict, sel: list) -> dict:
    return {"type": "segformer", "in_index": sel, "proj": "conv", **head_options(cfg)}


# ---- transformers (SegformerForSemanticSegmentation) ---------------------------------------------------
_LINEAR = re.compile(r"^decode_head\.(?:linear_c|linear_projections)\.(\d+)\.proj\.(weight|bias)$")


@transformers_segmentor("segformer")
def from_transformers(sd: dict, arch: dict) -> tuple[dict, dict]:
    """Hub files' names and the installed transformers' ``state_dict()`` names (transformers 5 renames
    ``decode_head.linear_c`` to ``linear_projections``) both load."""
    n_levels = len(arch["decode_head"].get("in_index", [0, 1, 2, 3]))
    rest = {}
    for key, value in sd.items():
        if key.startswith("segformer."):
            continue
        if (m := _LINEAR.match(key)):
            key = f"decode_head.proj.{m.group(1)}.conv.{m.group(2)}"
            if m.group(2) == "weight":
                value = value[:, :, None, None]
        elif key == "decode_head.linear_fuse.weight":
            # transformers concatenates the levels deepest first; segzoo finest first
            key = "decode_head.fuse.conv.weight"
            value = value.reshape(value.shape[0], n_levels, -1, *value.shape[2:]).flip(1).reshape(value.shape)
        elif key.startswith("decode_head.batch_norm."):
            key = "decode_head.fuse.bn." + key[len("decode_head.batch_norm."):]
        rest[key] = value
    return segformer_encoder(sd), rest
