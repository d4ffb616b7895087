"""ANN head (asymmetric non-local networks): an asymmetric fusion block (the last backbone map
attends to the pyramid-pooled previous one), dropout, a 3x3 ConvNormAct, an asymmetric pyramid
block (self-attention over pyramid-pooled keys), then the classifier (no dropout before it:
SSSegmentation applies the head's dropout after the fusion block only).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..foreign import UnsupportedConfig, check_options, cna_rules, head_options, ssseg_segmentor
from ..layers import ConvNormAct, SelfAttention, pyramid_pool_concat  # noqa: F401  (re-exported)
from .base import DecodeHead, register_head

__all__ = ["pyramid_pool_concat", "AsymmetricNonLocal", "ANNHead"]


class AsymmetricNonLocal(nn.Module):
    """ANN's asymmetric non-local block: ``num_stages`` :class:`SelfAttention` with ``key_pool_scales`` (one-conv
    query/key projections with norm, value/out projections without) of the query map over the
    key map, summed, concatenated after the query map and fused by a 1x1 conv + norm (+ ReLU when
    ``act``). Fusion block (AFNB): key map = the lower backbone level, ``act=False``; pyramid block
    (APNB): key map = query map, shared query/key projection, ``act=True``."""

    def __init__(self, key_channels: int, query_channels: int, transform_channels: int, out_channels: int,
                 key_pool_scales: Sequence[int] = (1, 3, 6, 8), num_stages: int = 1, share_key_query: bool = False,
                 act: bool = False):
        super().__init__()
        self.stages = nn.ModuleList(
            SelfAttention(key_channels, query_channels, transform_channels, out_channels, share_key_query=share_key_query,
                          key_query_num_convs=1, value_out_num_convs=1, key_query_norm=True, value_out_norm=False,
                          matmul_norm=True, with_out_project=True, key_pool_scales=key_pool_scales)
            for _ in range(num_stages))
        self.bottleneck = ConvNormAct(out_channels + query_channels, out_channels, 1, act=act)

    def forward(self, query_feats: torch.Tensor, key_feats: torch.Tensor) -> torch.Tensor:
        context = torch.stack([stage(query_feats, key_feats) for stage in self.stages], dim=0).sum(dim=0)
        return self.bottleneck(torch.cat([context, query_feats], dim=1))


@register_head("ann")
class ANNHead(DecodeHead):
    """Reads two backbone maps (``in_index`` = [low, high]). ``transform_channels``: the attention
    width; ``key_pool_scales``: the keys' pyramid grids; ``num_stages``: attention stages summed
    in each block."""

    def __init__(self, in_channels, num_classes, channels=512, transform_channels=256, key_pool_scales=(1, 3, 6, 8),
                 num_stages=1, in_index=(-2, -1), dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, list(in_index), dropout, align_corners)
        low, high = self.in_channels
        self.fusion = AsymmetricNonLocal(low, high, transform_channels, high, key_pool_scales, num_stages)
        self.bottleneck = ConvNormAct(high, channels, 3)
        self.pyramid = AsymmetricNonLocal(channels, channels, transform_channels, channels, key_pool_scales,
                                          num_stages, share_key_query=True, act=True)

    def forward(self, feats) -> torch.Tensor:
        low, high = self.select(feats)
        x = self.bottleneck(self.dropout(self.fusion(high, low)))
        x = self.pyramid(x, x)
        return self.classifier(x)


# ---- SSSegmentation ---------------------------------------------------------------------------------
def _stage_rules(src: str, dst: str) -> list[tuple[str, str]]:
    """SSSegmentation's ``SelfAttentionBlock`` stages of an AFN/APN block at ``src`` (one-conv projections:
    key/query with norm a flat Sequential, value/out without a bare conv) -> :class:`SelfAttention` with ``key_pool_scales``."""
    rules = []
    for proj in ("key_project", "query_project"):
        rules += cna_rules(rf"{src}\.stages\.(\d+)\.{proj}", rf"{dst}.stages.\1.{proj}.0")
    for proj in ("value_project", "out_project"):
        rules.append((rf"^{src}\.stages\.(\d+)\.{proj}\.", rf"{dst}.stages.\1.{proj}.0.conv."))
    return rules + cna_rules(rf"{src}\.bottleneck", f"{dst}.bottleneck")


_ANN_OPTIONS = {"in_channels_list", "feats_channels", "transform_channels", "query_scales", "key_pool_scales",
                "dropout"}


@ssseg_segmentor("ANNNet", "annnet", [
    *_stage_rules(r"afn_block", "decode_head.fusion"), *_stage_rules(r"apn_block", "decode_head.pyramid"),
    *cna_rules(r"bottleneck", "decode_head.bottleneck"), (r"^decoder\.1\.", "decode_head.classifier.")])
def from_ssseg(cfg: dict, sel: list) -> dict:
    head = cfg["head"]
    check_options(head, _ANN_OPTIONS, "ANNNet head")
    query_scales = list(head.get("query_scales", [1]))
    if not query_scales or any(s != 1 for s in query_scales):
        # ssseg max-pools the queries then reshapes the context to the undownsampled grid (it cannot run)
        raise UnsupportedConfig(f"ANNNet with query_scales={query_scales!r} is not ported (only 1s)")
    if len(sel) < 2:
        raise UnsupportedConfig("ANNNet needs two backbone levels (selected_indices)")
    return {"type": "ann", "in_index": [sel[-2], sel[-1]], "transform_channels": int(head["transform_channels"]),
            "key_pool_scales": [int(s) for s in head["key_pool_scales"]], "num_stages": len(query_scales),
            **head_options(cfg)}
