"""EncNet head (context encoding): a 3x3 bottleneck, optionally fused with 1x1 lateral projections
of other feature maps, then the context encoding module, which learns a codebook, encodes the
image as the soft-assigned residuals of its pixels to the codewords, and rescales the channels
by a gate computed from that encoding; then the classifier.

The encoding also feeds the SE-loss branch (``se_layer``): image-level class-presence logits
(N, num_classes). ``forward`` returns the segmentation logits only; ``forward_with_se`` returns
both (the EncNet segmentor, ``segzoo.models.segmentors.encnet``, uses it in training).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..foreign import UnsupportedConfig, check_options, cna_rules, head_options, ssseg_segmentor
from ..layers import ConvNormAct, resize
from .base import DecodeHead, register_head

__all__ = ["Encoding", "ContextEncoding", "EncHead"]


class Encoding(nn.Module):
    """Learnable residual encoder: ``num_codes`` codewords (K, C) with smoothing factors (K); each
    pixel is assigned to the codewords by the softmax over K of ``scale_k * ||x - c_k||^2``, and
    the output (N, K, C) is, per codeword, the assignment-weighted sum of the residuals ``x - c_k``."""

    #: pixels per block of the squared distances (bounds the (N, pixels, K, C) difference tensor)
    block_elements = 1 << 24

    def __init__(self, channels: int, num_codes: int):
        super().__init__()
        self.channels, self.num_codes = channels, num_codes
        std = (num_codes * channels) ** -0.5
        self.codewords = nn.Parameter(torch.empty(num_codes, channels).uniform_(-std, std))
        self.scale = nn.Parameter(torch.empty(num_codes).uniform_(-1, 0))

    def _squared_distances(self, x: torch.Tensor) -> torch.Tensor:
        """``||x_i - c_k||^2`` (N, P, K) of the pixels x (N, P, C), summed over the written-out
        differences (no ``|x|^2 - 2x.c + |c|^2`` cancellation), block by block over the pixels."""
        n, p, c = x.shape
        step = max(1, self.block_elements // max(1, n * self.num_codes * c))
        return torch.cat([(x[:, i:i + step, None, :] - self.codewords).pow(2).sum(dim=3) for i in range(0, p, step)],
                         dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"Encoding expects (N, {self.channels}, H, W), got {tuple(x.shape)}")
        x = x.flatten(2).transpose(1, 2)                                   # (n, p, c)
        assign = (self.scale * self._squared_distances(x)).softmax(dim=2)  # (n, p, k)
        # sum_i a_ik (x_i - c_k) = (A^T X)_k - (sum_i a_ik) c_k
        return torch.bmm(assign.transpose(1, 2), x) - assign.sum(dim=1).unsqueeze(2) * self.codewords


class ContextEncoding(nn.Module):
    """Context encoding module: 1x1 ConvNormAct projection, :class:`Encoding` + BatchNorm1d over
    the codewords + ReLU, averaged over the codewords into the image encoding (N, C); a sigmoid
    gate (Linear) of it rescales the channels: ``relu(x + x * gate)``. Returns
    ``(encoding, gated features)``."""

    def __init__(self, channels: int, num_codes: int):
        super().__init__()
        self.project = ConvNormAct(channels, channels, 1)
        self.encoding = Encoding(channels, num_codes)
        self.norm = nn.BatchNorm1d(num_codes)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = self.act(self.norm(self.encoding(self.project(x)))).mean(dim=1)  # (n, c)
        gate = torch.sigmoid(self.fc(encoded))[:, :, None, None]
        return encoded, torch.relu(x + x * gate)


@register_head("enc")
class EncHead(DecodeHead):
    """``in_index``: the feature map the 3x3 bottleneck reads (a neck's output or a backbone
    level); ``lateral_index``: other feature maps (indices into the same list), each projected by
    a 1x1 ConvNormAct to ``channels``, resized to the bottleneck's output and concatenated with it,
    then fused by a 3x3 ConvNormAct (None: no laterals); ``num_codes``: the codebook size;
    ``use_se_loss``: build the SE-loss branch (``se_layer``, Linear(channels, num_classes))."""

    def __init__(self, in_channels, num_classes, channels=512, num_codes=32, use_se_loss=True,
                 lateral_index: Sequence[int] | None = None, in_index=-1, dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.bottleneck = ConvNormAct(self.in_channels, channels, 3)
        self.lateral_index = list(lateral_index) if lateral_index else None
        if self.lateral_index:
            self.laterals = nn.ModuleList(ConvNormAct(in_channels[i], channels, 1) for i in self.lateral_index)
            self.fusion = ConvNormAct(channels * (len(self.lateral_index) + 1), channels, 3)
        self.context_encoding = ContextEncoding(channels, num_codes)
        self.se_layer = nn.Linear(channels, num_classes) if use_se_loss else None

    def forward_with_se(self, feats) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(segmentation logits (N, num_classes, h, w), SE-loss logits (N, num_classes) or None)."""
        x = self.bottleneck(self.select(feats))
        if self.lateral_index:
            lats = [resize(conv(feats[i]), x.shape[-2:], self.align_corners)
                    for i, conv in zip(self.lateral_index, self.laterals)]
            x = self.fusion(torch.cat([x, *lats], dim=1))
        encoded, x = self.context_encoding(x)
        se = self.se_layer(encoded) if self.se_layer is not None else None
        return self.classify(x), se

    def forward(self, feats) -> torch.Tensor:
        return self.forward_with_se(feats)[0]


# ---- SSSegmentation (ENCNet) ------------------------------------------------------------------------
ENC_RULES = [
    *cna_rules(r"bottleneck", "decode_head.bottleneck"),
    *cna_rules(r"enc_module\.encoding_project", "decode_head.context_encoding.project"),
    (r"^enc_module\.encoding\.0\.", "decode_head.context_encoding.encoding."),
    (r"^enc_module\.encoding\.1\.", "decode_head.context_encoding.norm."),
    (r"^enc_module\.fc\.0\.", "decode_head.context_encoding.fc."),
    (r"^se_layer\.", "decode_head.se_layer."),
    (r"^decoder\.1\.", "decode_head.classifier.")]
"""SSSegmentation's ENCNet decode-head keys (relative to the segmentor) -> segzoo's ``EncHead``."""

_ENC_OPTIONS = {"in_channels_list", "feats_channels", "num_codes", "extra", "dropout"}


def enc_head_from_ssseg(head: dict, cfg: dict, in_index) -> dict:
    """``arch["decode_head"]`` of an SSSegmentation ENCNet head config reading ``in_index``
    (shared with FastFCN's ENCNet, whose head reads the JPU neck's output)."""
    check_options(head, _ENC_OPTIONS | {"jpu"}, "ENCNet head")
    extra = head.get("extra", {})
    if set(extra) - {"add_lateral", "use_se_loss"}:
        raise UnsupportedConfig(f"ENCNet extra options {sorted(extra)} are not ported")
    if extra.get("add_lateral", False):  # its lateral_convs.append(conv, norm, act) raises a TypeError
        raise UnsupportedConfig("ENCNet with add_lateral=True is not ported (sssegmentation 1.7.0 cannot build it)")
    return {"type": "enc", "in_index": in_index, "num_codes": int(head["num_codes"]),
            "use_se_loss": bool(extra.get("use_se_loss", True)), **head_options(cfg)}


@ssseg_segmentor("ENCNet", "encnet", ENC_RULES)
def from_ssseg(cfg: dict, sel: list) -> dict:
    if "jpu" in cfg["head"]:
        raise UnsupportedConfig("ENCNet with a JPU neck is FastFCN's")
    return enc_head_from_ssseg(cfg["head"], cfg, sel[-1])
