"""EMANet head (expectation-maximisation attention): the features are reconstructed from a small
set of bases refined by a few EM iterations, added back to them, then fused with the backbone map
and classified.

The bases are a buffer (``ema.bases``, shape (1, C, K)) that the checkpoint carries. In training
each forward pass moves it towards the batch's refined bases by ``momentum`` (averaged over the
processes of a distributed run); in eval mode it is only read.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..foreign import check_options, cna_rules, head_options, ssseg_segmentor
from ..layers import ConvNormAct
from .base import DecodeHead, register_head

__all__ = ["EMAttention", "EMAHead"]


class EMAttention(nn.Module):
    """Expectation-maximisation attention over ``num_bases`` bases of ``channels`` channels:
    ``num_stages`` E/M steps (pixel-to-basis responsibilities softmaxed over the bases; bases as the
    responsibility-weighted, L2-normalised mean of the pixels) run without gradient, then each
    pixel is rebuilt as its responsibility-weighted sum of the refined bases."""

    def __init__(self, channels: int, num_bases: int = 64, num_stages: int = 3, momentum: float = 0.1):
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"num_stages must be at least 1, got {num_stages}")
        self.num_stages = num_stages
        self.momentum = momentum
        bases = torch.randn(1, channels, num_bases) * math.sqrt(2.0 / num_bases)
        self.register_buffer("bases", F.normalize(bases, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        feats = x.reshape(n, c, h * w)
        bases = self.bases.expand(n, -1, -1)
        with torch.no_grad():
            for _ in range(self.num_stages):
                resp = torch.bmm(feats.transpose(1, 2), bases).softmax(dim=2)     # (n, hw, k)
                bases = F.normalize(torch.bmm(feats, F.normalize(resp, p=1, dim=1)), dim=1)  # (n, c, k)
        recon = torch.bmm(bases, resp.transpose(1, 2)).reshape(n, c, h, w)
        if self.training:
            self._update(bases)
        return recon

    @torch.no_grad()
    def _update(self, bases: torch.Tensor) -> None:
        """Moving average of the stored bases towards the batch's (all processes') refined bases."""
        batch = bases.mean(dim=0, keepdim=True)
        if dist.is_available() and dist.is_initialized():
            batch = batch / dist.get_world_size()
            dist.all_reduce(batch, op=dist.ReduceOp.SUM)
        batch = F.normalize(batch, dim=1)
        self.bases.copy_((1 - self.momentum) * self.bases + self.momentum * batch)


@register_head("ema")
class EMAHead(DecodeHead):
    """``channels``: the attention's width; ``num_bases`` / ``num_stages`` / ``momentum``: the EM
    bases, iterations and the bases' moving-average rate. The 1x1 ``mid_conv`` before the
    attention is frozen (``requires_grad=False``), as in the reference."""

    def __init__(self, in_channels, num_classes, channels=512, num_bases=64, num_stages=3, momentum=0.1,
                 in_index=-1, dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.in_conv = ConvNormAct(self.in_channels, channels, 3)
        self.mid_conv = nn.Conv2d(channels, channels, 1)
        self.mid_conv.requires_grad_(False)
        self.ema = EMAttention(channels, num_bases, num_stages, momentum)
        self.out_conv = ConvNormAct(channels, channels, 1, act=False)
        self.bottleneck = ConvNormAct(channels, channels, 3)
        self.fusion = ConvNormAct(self.in_channels + channels, channels, 3)

    def forward(self, feats) -> torch.Tensor:
        x = self.select(feats)
        identity = self.in_conv(x)
        recon = self.out_conv(F.relu(self.ema(self.mid_conv(identity))))
        y = self.bottleneck(F.relu(identity + recon))
        return self.classify(self.fusion(torch.cat([x, y], dim=1)))


# ---- SSSegmentation (EMANet) ------------------------------------------------------------------------
_EMA_OPTIONS = {"in_channels", "feats_channels", "num_bases", "num_stages", "momentum", "dropout"}


@ssseg_segmentor("EMANet", "emanet", [
    *cna_rules(r"ema_in_conv", "decode_head.in_conv"), (r"^ema_mid_conv\.", "decode_head.mid_conv."),
    (r"^ema_module\.bases$", "decode_head.ema.bases"), *cna_rules(r"ema_out_conv", "decode_head.out_conv"),
    *cna_rules(r"bottleneck", "decode_head.bottleneck"), *cna_rules(r"decoder", "decode_head.fusion"),
    (r"^decoder\.4\.", "decode_head.classifier.")])
def from_ssseg(cfg: dict, sel: list) -> dict:
    head = cfg["head"]
    check_options(head, _EMA_OPTIONS, "EMANet head")
    return {"type": "ema", "in_index": sel[-1], "num_bases": int(head["num_bases"]),
            "num_stages": int(head["num_stages"]), "momentum": float(head["momentum"]), **head_options(cfg)}
