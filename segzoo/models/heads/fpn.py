"""Necks, the FPN neck and the Semantic FPN head.

A neck sits between the backbone and the heads: it maps the backbone's list of feature maps to a
list of the same length (the levels it reads replaced by its outputs, the others passed through)
and exposes ``out_channels`` (that list's widths). Necks are registered with :func:`register_neck`.

A segmentor with a neck describes it in its decode head config::

    {"type": "with_neck", "neck": {"type": "fpn", ...}, "head": {"type": "fpn", ...}}

which builds ``head`` for the neck's output widths and records ``neck`` on the head module
(``neck_cfg``); the segmentor (``segzoo.models.segmentors.fastfcn.NeckSegmentor``) builds the neck
from it and runs it between the backbone and every head, auxiliary ones included.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._registry import registrar
from ..foreign import UnsupportedConfig, check_options, cna_rules, ssseg_segmentor
from ..layers import ConvNormAct, resize
from .base import DecodeHead, build_head, register_head

__all__ = ["NECKS", "register_neck", "build_neck", "head_with_neck", "FPN", "FPNHead", "fpn_neck_from_ssseg",
           "fpn_neck_rules", "fpn_head_rules"]

NECKS: dict[str, type] = {}

register_neck = registrar(NECKS)  # @register_neck("fpn") on a neck class


def build_neck(cfg: dict, in_channels: Sequence[int], align_corners: bool = False) -> nn.Module:
    """The neck ``cfg`` describes, reading feature maps of widths ``in_channels``."""
    cfg = dict(cfg)
    kind = cfg.pop("type")
    if kind not in NECKS:
        raise ValueError(f"unknown neck type {kind!r}; known: {', '.join(sorted(NECKS))}")
    return NECKS[kind](in_channels=list(in_channels), align_corners=align_corners, **cfg)


@register_head("with_neck")
def head_with_neck(in_channels, num_classes, neck: dict, head: dict, align_corners: bool = False) -> nn.Module:
    """The decode head ``head`` built on the outputs of ``neck`` (a neck config), with ``neck`` recorded
    on it as ``neck_cfg`` for the segmentor, which builds and runs the neck."""
    with torch.device("meta"):  # only its output widths are needed here
        chans = build_neck(neck, in_channels, align_corners).out_channels
    module = build_head(head, chans, num_classes, align_corners)
    module.neck_cfg = dict(neck)
    return module


def _levels(in_index: Sequence[int], num_levels: int) -> list[int]:
    return [int(i) % num_levels for i in in_index]


@register_neck("fpn")
class FPN(nn.Module):
    """Feature pyramid network over the levels ``in_index``: a 1x1 lateral ConvNormAct per level, the
    top-down pathway (each coarser lateral resized to the next finer one's size by
    ``upsample_mode`` interpolation, "nearest" or "bilinear" without corner alignment, and added),
    then a 3x3 ConvNormAct per level. Its outputs (``channels`` wide) replace those levels."""

    def __init__(self, in_channels: Sequence[int], channels: int = 256, in_index: Sequence[int] = (0, 1, 2, 3),
                 upsample_mode: str = "nearest", align_corners: bool = False):
        super().__init__()
        if upsample_mode not in ("nearest", "bilinear"):
            raise ValueError(f"upsample_mode must be 'nearest' or 'bilinear', got {upsample_mode!r}")
        self.in_index = _levels(in_index, len(in_channels))
        self.upsample_mode = upsample_mode
        self.lateral_convs = nn.ModuleList(ConvNormAct(in_channels[i], channels, 1) for i in self.in_index)
        self.fpn_convs = nn.ModuleList(ConvNormAct(channels, channels, 3) for _ in self.in_index)
        self.out_channels = [channels if i in self.in_index else c for i, c in enumerate(in_channels)]

    def _upsample(self, x: torch.Tensor, size) -> torch.Tensor:
        if self.upsample_mode == "nearest":
            return F.interpolate(x, size=tuple(size), mode="nearest")
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(feats[i]) for i, conv in zip(self.in_index, self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + self._upsample(laterals[i], laterals[i - 1].shape[-2:])
        outs = list(feats)
        for i, conv, lateral in zip(self.in_index, self.fpn_convs, laterals):
            outs[i] = conv(lateral)
        return outs


@register_head("fpn")
class FPNHead(DecodeHead):
    """Semantic FPN head: per level of ``in_index`` (of stride ``feature_strides[i]``), a stack of
    ``max(1, log2(stride / finest stride))`` 3x3 ConvNormAct, each followed, on the coarser levels, by
    2x bilinear upsampling; the levels are summed at the finest one's size (``fuse``), then the
    classifier."""

    def __init__(self, in_channels, num_classes, channels=128, feature_strides: Sequence[int] = (4, 8, 16, 32),
                 in_index=(0, 1, 2, 3), dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, list(in_index), dropout, align_corners)
        if len(feature_strides) != len(self.in_index):
            raise ValueError(f"{len(feature_strides)} feature_strides for {len(self.in_index)} levels")
        self.feature_strides = [int(s) for s in feature_strides]
        first = self.feature_strides[0]
        self.upsample = [s != first for s in self.feature_strides]
        self.scale_heads = nn.ModuleList()
        for width, stride in zip(self.in_channels, self.feature_strides):
            depth = max(1, int(math.log2(stride) - math.log2(first)))
            self.scale_heads.append(nn.Sequential(*(ConvNormAct(width if k == 0 else channels, channels, 3)
                                                    for k in range(depth))))

    def _level(self, k: int, x: torch.Tensor) -> torch.Tensor:
        for block in self.scale_heads[k]:
            x = block(x)
            if self.upsample[k]:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=self.align_corners)
        return x

    def fuse(self, feats) -> torch.Tensor:
        """The summed levels (N, channels, h, w) at the finest level's size, before the classifier."""
        xs = self.select(feats)
        out = self._level(0, xs[0])
        for k in range(1, len(xs)):
            out = out + resize(self._level(k, xs[k]), out.shape[-2:], self.align_corners)
        return out

    def forward(self, feats) -> torch.Tensor:
        return self.classify(self.fuse(feats))


# ---- SSSegmentation (SemanticFPN; the FPN parts are PointRend's too) --------------------------------
def fpn_neck_from_ssseg(head: dict, sel: list, in_channels_key: str = "in_channels_list") -> dict:
    """The FPN neck config of an SSSegmentation SemanticFPN / PointRend head config."""
    upsample = dict(head.get("upsample_cfg", {"mode": "nearest"}))
    if set(upsample) != {"mode"} or upsample["mode"] not in ("nearest", "bilinear"):
        raise UnsupportedConfig(f"FPN upsample_cfg {upsample!r} is not ported (only mode 'nearest' or 'bilinear')")
    if len(head[in_channels_key]) != len(sel):
        raise UnsupportedConfig(f"FPN over {len(head[in_channels_key])} levels of {len(sel)} selected is not ported")
    return {"type": "fpn", "in_index": list(sel), "channels": int(head["feats_channels"]),
            "upsample_mode": upsample["mode"]}


def fpn_head_from_ssseg(head: dict, sel: list, dropout: float) -> dict:
    """The ``fpn`` head options (scale heads) of an SSSegmentation SemanticFPN / PointRend head config."""
    strides = [int(s) for s in head["feature_stride_list"]]
    if len(strides) != len(sel):
        raise UnsupportedConfig(f"{len(strides)} feature strides for {len(sel)} FPN levels are not ported")
    return {"in_index": list(sel), "channels": int(head["scale_head_channels"]), "feature_strides": strides,
            "dropout": float(dropout)}


def fpn_neck_rules(src: str = "fpn_neck", dst: str = "neck") -> list[tuple[str, str]]:
    """SSSegmentation's ``FPN`` at ``src`` -> segzoo's :class:`FPN` at ``dst``."""
    return [*cna_rules(rf"{src}\.lateral_convs\.(\d+)", rf"{dst}.lateral_convs.\1"),
            *cna_rules(rf"{src}\.fpn_convs\.(\d+)", rf"{dst}.fpn_convs.\1")]


def fpn_head_rules(head: dict, dst: str) -> list[tuple[str, str]]:
    """SSSegmentation's ``scale_heads`` (``Sequential(conv, norm, act)`` blocks, with an ``Upsample``
    after each on the coarser levels) -> the ``scale_heads`` of the :class:`FPNHead` config ``head``
    at ``dst``."""
    strides = head["feature_strides"]
    rules = []
    for level, stride in enumerate(strides):
        depth = max(1, int(math.log2(stride) - math.log2(strides[0])))
        step = 2 if stride != strides[0] else 1
        for k in range(depth):
            rules += cna_rules(rf"scale_heads\.{level}\.{k * step}", f"{dst}.scale_heads.{level}.{k}")
    return rules


_SEMANTICFPN_OPTIONS = {"in_channels_list", "feats_channels", "feature_stride_list", "scale_head_channels",
                        "upsample_cfg", "dropout"}


@ssseg_segmentor("SemanticFPN", "semanticfpn", lambda arch: [
    *fpn_neck_rules(), *fpn_head_rules(arch["decode_head"]["head"], "decode_head"),
    (r"^decoder\.1\.", "decode_head.classifier.")])
def from_ssseg(cfg: dict, sel: list) -> dict:
    head = cfg["head"]
    check_options(head, _SEMANTICFPN_OPTIONS, "SemanticFPN head")
    return {"type": "with_neck", "neck": fpn_neck_from_ssseg(head, sel),
            "head": {"type": "fpn", **fpn_head_from_ssseg(head, sel, head.get("dropout", 0.1))}}
