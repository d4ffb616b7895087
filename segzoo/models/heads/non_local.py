"""NonLocalNet and DNLNet heads: a non-local block (embedded Gaussian), plain or disentangled,
between two 3x3 ConvNormAct; the result concatenated with the backbone map and fused by a 3x3
ConvNormAct; then the classifier (the skeleton is GCNet's, ``heads.gc.FusedContextHead``)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..foreign import UnsupportedConfig, check_options, head_options, ssseg_segmentor
from ..layers import ConvNormAct
from .base import register_head
from .gc import FusedContextHead, fused_context_rules

__all__ = ["NonLocal2d", "NonLocalHead", "DNLHead"]


class NonLocal2d(nn.Module):
    """Non-local block, embedded Gaussian: every position gathers the values ``g`` (1x1 conv to
    ``channels // reduction``) of all positions, weighted by the softmax over them of the dot
    products of 1x1-conv embeddings ``theta`` (query) and ``phi`` (key), divided by
    ``sqrt(channels // reduction)`` when ``use_scale`` and by ``temperature``; a 1x1 conv + norm
    back to ``channels`` is added to the input.

    ``disentangled`` (DNL): the embeddings are centred (their mean over the positions subtracted)
    before the dot products, and a unary term, the values pooled by a softmax mask over the
    positions (``conv_mask``), is added to every position's context before the output conv."""

    def __init__(self, channels: int, reduction: int = 2, use_scale: bool = True, temperature: float = 1.0,
                 disentangled: bool = False):
        super().__init__()
        self.inter_channels = max(channels // reduction, 1)
        self.use_scale = use_scale
        self.temperature = temperature
        self.g = nn.Conv2d(channels, self.inter_channels, 1)
        self.theta = nn.Conv2d(channels, self.inter_channels, 1)
        self.phi = nn.Conv2d(channels, self.inter_channels, 1)
        self.conv_out = ConvNormAct(self.inter_channels, channels, 1, act=False)
        self.conv_mask = nn.Conv2d(channels, 1, 1) if disentangled else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        value = self.g(x).flatten(2).transpose(1, 2)        # (n, hw, c')
        query = self.theta(x).flatten(2).transpose(1, 2)    # (n, hw, c')
        key = self.phi(x).flatten(2)                        # (n, c', hw)
        if self.conv_mask is not None:
            query = query - query.mean(dim=1, keepdim=True)
            key = key - key.mean(dim=2, keepdim=True)
        sim = torch.matmul(query, key)
        if self.use_scale:
            sim = sim / self.inter_channels ** 0.5
        if self.temperature != 1:
            sim = sim / self.temperature
        context = torch.matmul(sim.softmax(dim=-1), value)   # (n, hw, c')
        context = context.transpose(1, 2).reshape(n, self.inter_channels, *x.shape[2:])
        if self.conv_mask is not None:
            mask = self.conv_mask(x).flatten(2).softmax(dim=-1)   # (n, 1, hw)
            context = context + torch.matmul(mask, value).transpose(1, 2).unsqueeze(3)  # + (n, c', 1, 1)
        return x + self.conv_out(context)


@register_head("nonlocal")
class NonLocalHead(FusedContextHead):
    """``reduction``, ``use_scale``: the :class:`NonLocal2d` block's."""

    def __init__(self, in_channels, num_classes, channels=512, reduction=2, use_scale=True, in_index=-1,
                 dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.block = NonLocal2d(channels, reduction, use_scale)


@register_head("dnl")
class DNLHead(FusedContextHead):
    """The disentangled :class:`NonLocal2d` block (``reduction``, ``use_scale``, ``temperature``)."""

    def __init__(self, in_channels, num_classes, channels=512, reduction=2, use_scale=True, temperature=0.05,
                 in_index=-1, dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.block = NonLocal2d(channels, reduction, use_scale, temperature, disentangled=True)


# ---- SSSegmentation ---------------------------------------------------------------------------------
_BLOCK_RULES = [(r"g\.0\.", "g."), (r"theta\.0\.", "theta."), (r"phi\.0\.", "phi."),
                (r"conv_out\.0\.", "conv_out.conv."), (r"conv_out\.1\.", "conv_out.bn."),
                (r"conv_mask\.", "conv_mask.")]
_NL_OPTIONS = {"in_channels", "feats_channels", "dropout", "reduction", "use_scale", "mode"}


def _block_options(cfg: dict) -> dict:
    head = cfg["head"]
    mode = head.get("mode", "embeddedgaussian")
    if mode != "embeddedgaussian":
        raise UnsupportedConfig(f"{cfg['type']} with mode={mode!r} is not ported (only 'embeddedgaussian')")
    return {"reduction": int(head.get("reduction", 2)), "use_scale": bool(head.get("use_scale", True))}


@ssseg_segmentor("NonLocalNet", "nonlocalnet", fused_context_rules("nl", r"nl_block", _BLOCK_RULES))
def from_ssseg(cfg: dict, sel: list) -> dict:
    check_options(cfg["head"], _NL_OPTIONS, f"{cfg['type']} head")
    return {"type": "nonlocal", "in_index": sel[-1], **_block_options(cfg), **head_options(cfg)}


@ssseg_segmentor("DNLNet", "dnlnet", fused_context_rules("dnl", r"dnl_block", _BLOCK_RULES))
def dnl_from_ssseg(cfg: dict, sel: list) -> dict:
    check_options(cfg["head"], _NL_OPTIONS | {"temperature"}, f"{cfg['type']} head")
    if "temperature" not in cfg["head"]:  # a required argument of ssseg's DisentangledNonLocal2d
        raise UnsupportedConfig("DNLNet without a temperature is not ported")
    return {"type": "dnl", "in_index": sel[-1], "temperature": float(cfg["head"]["temperature"]),
            **_block_options(cfg), **head_options(cfg)}
