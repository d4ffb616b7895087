"""GCNet head: a global context block (attention-pooled global context, transformed by a
bottleneck with LayerNorm, added to / gating every position) between two 3x3 ConvNormAct; the
result concatenated with the backbone map and fused by a 3x3 ConvNormAct; then the classifier.

Also the head skeleton GCNet shares with NonLocalNet and DNLNet (``FusedContextHead``: the same
convs around a different context block), and its SSSegmentation key rules.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..foreign import UnsupportedConfig, check_options, cna_rules, head_options, ssseg_segmentor
from ..layers import ConvNormAct, adaptive_avg_pool
from .base import DecodeHead, register_head

__all__ = ["FusedContextHead", "GlobalContextBlock", "GCHead", "fused_context_rules"]


class FusedContextHead(DecodeHead):
    """3x3 ConvNormAct -> ``block`` (a context block keeping ``channels``) -> 3x3 ConvNormAct; the
    result concatenated after the backbone map and fused by a 3x3 ConvNormAct; then the classifier
    (mmseg's FCNHead with two convs and ``concat_input``, a block between the convs). Subclasses
    build ``self.block`` after calling this ``__init__``."""

    def __init__(self, in_channels, channels, num_classes, in_index, dropout, align_corners):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.conv_before = ConvNormAct(self.in_channels, channels, 3)
        self.block: nn.Module = nn.Identity()
        self.conv_after = ConvNormAct(channels, channels, 3)
        self.bottleneck = ConvNormAct(self.in_channels + channels, channels, 3)

    def forward(self, feats) -> torch.Tensor:
        x = self.select(feats)
        context = self.conv_after(self.block(self.conv_before(x)))
        return self.classify(self.bottleneck(torch.cat([x, context], dim=1)))


class GlobalContextBlock(nn.Module):
    """Global context block (GCNet): one context vector per image, pooled over the positions by a
    softmax attention mask (``pooling="att"``) or by averaging (``"avg"``), transformed by
    1x1 conv -> LayerNorm -> ReLU -> 1x1 conv (``channels * ratio`` wide) and fused into every
    position: ``channel_mul`` gates the input by its sigmoid, then ``channel_add`` adds it."""

    def __init__(self, channels: int, ratio: float = 0.25, pooling: str = "att",
                 fusions: Sequence[str] = ("channel_add",)):
        super().__init__()
        if pooling not in ("att", "avg"):
            raise ValueError(f"pooling must be 'att' or 'avg', got {pooling!r}")
        if not fusions or set(fusions) - {"channel_add", "channel_mul"}:
            raise ValueError(f"fusions must be a non-empty subset of channel_add, channel_mul, got {fusions!r}")
        planes = int(channels * ratio)
        self.pooling = pooling
        self.conv_mask = nn.Conv2d(channels, 1, 1) if pooling == "att" else None
        self.channel_add = self._transform(channels, planes) if "channel_add" in fusions else None
        self.channel_mul = self._transform(channels, planes) if "channel_mul" in fusions else None

    @staticmethod
    def _transform(channels: int, planes: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(channels, planes, 1), nn.LayerNorm([planes, 1, 1]), nn.ReLU(inplace=True),
                             nn.Conv2d(planes, channels, 1))

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The context vectors (N, C, 1, 1)."""
        if self.conv_mask is None:
            return adaptive_avg_pool(x, 1)
        n, c = x.shape[:2]
        mask = self.conv_mask(x).flatten(2).softmax(dim=2)                 # (n, 1, hw)
        return torch.matmul(x.reshape(n, 1, c, -1), mask.unsqueeze(-1)).reshape(n, c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.pool(x)
        out = x
        if self.channel_mul is not None:
            out = out * torch.sigmoid(self.channel_mul(context))
        if self.channel_add is not None:
            out = out + self.channel_add(context)
        return out


@register_head("gc")
class GCHead(FusedContextHead):
    """``ratio``, ``pooling``, ``fusions``: the :class:`GlobalContextBlock`'s."""

    def __init__(self, in_channels, num_classes, channels=512, ratio=0.25, pooling="att", fusions=("channel_add",),
                 in_index=-1, dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.block = GlobalContextBlock(channels, ratio, pooling, fusions)


# ---- SSSegmentation ---------------------------------------------------------------------------------
def fused_context_rules(tag: str, block: str, block_rules: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """SSSegmentation's NonLocalNet / DNLNet / GCNet layout (``conv_before_<tag>``, the block at
    ``block``, ``conv_after_<tag>``, ``decoder`` = conv, norm, act, dropout, classifier) ->
    :class:`FusedContextHead`; ``block_rules`` map the keys under ``block.`` (the prefix stripped) to
    those under ``decode_head.block.``."""
    return [*cna_rules(rf"conv_before_{tag}", "decode_head.conv_before"),
            *cna_rules(rf"conv_after_{tag}", "decode_head.conv_after"),
            *[(rf"^{block}\.{src.lstrip('^')}", f"decode_head.block.{dst}") for src, dst in block_rules],
            *cna_rules(r"decoder", "decode_head.bottleneck"), (r"^decoder\.4\.", "decode_head.classifier.")]


_GC_OPTIONS = {"in_channels", "feats_channels", "dropout", "ratio", "pooling_type", "fusion_types", "norm_cfg",
               "act_cfg"}


@ssseg_segmentor("GCNet", "gcnet", fused_context_rules("cb", r"contextblock_net", [
    (r"conv_mask\.", "conv_mask."), (r"channel_add_conv\.", "channel_add."), (r"channel_mul_conv\.", "channel_mul.")]))
def from_ssseg(cfg: dict, sel: list) -> dict:
    head = cfg["head"]
    check_options(cfg["head"], _GC_OPTIONS, f"{cfg['type']} head")
    if head.get("norm_cfg") != {"type": "LayerNorm"}:  # the default, the segmentor's BatchNorm, fails on (C, 1, 1)
        raise UnsupportedConfig(f"GCNet context block with norm_cfg={head.get('norm_cfg')!r} is not ported "
                                "(only LayerNorm)")
    act = head.get("act_cfg", cfg.get("act_cfg", {"type": "ReLU"}))
    if act.get("type") != "ReLU":
        raise UnsupportedConfig(f"GCNet context block with act_cfg={act!r} is not ported (only ReLU)")
    pooling, fusions = head.get("pooling_type", "att"), list(head.get("fusion_types", ["channel_add"]))
    if pooling not in ("att", "avg") or not fusions or set(fusions) - {"channel_add", "channel_mul"}:
        raise UnsupportedConfig(f"GCNet with pooling_type={pooling!r}, fusion_types={fusions!r} is not ported")
    return {"type": "gc", "in_index": sel[-1], "ratio": float(head["ratio"]), "pooling": pooling, "fusions": fusions,
            **head_options(cfg)}
