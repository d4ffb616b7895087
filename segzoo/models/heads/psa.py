"""PSANet head (point-wise spatial attention): one branch per direction ("collect": each pixel
gathers from the others; "distribute": each pixel spreads to the others; "bi-direction": both,
concatenated). A branch reduces the features (1x1 ConvNormAct), shrinks the map, predicts for
each pixel a ``mask_size`` window of attention weights around it (:func:`psa_mask` places them on
the map) and aggregates the features with them. A 1x1 ConvNormAct (padding 1, as the reference)
projects the branches back to the input's channels, resized to its map, concatenated with it and
fused by a 3x3 ConvNormAct; then the classifier.

:func:`psa_mask` is the operator (mmcv's ``PSAMask``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..foreign import UnsupportedConfig, check_options, cna_rules, head_options, ssseg_segmentor
from ..layers import ConvNormAct, resize
from .base import DecodeHead, register_head

__all__ = ["psa_mask", "PSABranch", "PSAHead"]


def psa_mask(x: torch.Tensor, mode: str, mask_size: Sequence[int]) -> torch.Tensor:
    """mmcv's ``PSAMask``: per-pixel window weights ``x`` (N, mh * mw, H, W) -> dense attention
    (N, H * W, H, W). Pixel q's weight at window cell (i, j) concerns pixel
    p = q + (i - (mh - 1) // 2, j - (mw - 1) // 2); pairs outside the window, and cells outside the
    map, are 0. ``"collect"``: ``out[n, p, q]`` (flattened p, q); ``"distribute"``: ``out[n, q, p]``."""
    if mode not in ("collect", "distribute"):
        raise ValueError(f"psa_mask mode must be 'collect' or 'distribute', got {mode!r}")
    n, c, h, w = x.shape
    mh, mw = (int(s) for s in mask_size)
    if c != mh * mw:
        raise ValueError(f"psa_mask expects {mh} * {mw} channels, got {c}")
    half_h, half_w = (mh - 1) // 2, (mw - 1) // 2
    # the window cells any offset p - q in (-h, h) x (-w, w) reads, zeros where the mask has none
    lo_h, lo_w = half_h - (h - 1), half_w - (w - 1)
    r0, r1 = max(lo_h, 0), min(half_h + h, mh)
    c0, c1 = max(lo_w, 0), min(half_w + w, mw)
    win = x.new_zeros(n, 2 * h - 1, 2 * w - 1, h, w)
    win[:, r0 - lo_h:r1 - lo_h, c0 - lo_w:c1 - lo_w] = x.reshape(n, mh, mw, h, w)[:, r0:r1, c0:c1]
    dev = x.device
    ph, pw = torch.arange(h, device=dev).view(h, 1, 1, 1), torch.arange(w, device=dev).view(1, w, 1, 1)
    qh, qw = torch.arange(h, device=dev).view(1, 1, h, 1), torch.arange(w, device=dev).view(1, 1, 1, w)
    out = win[:, ph - qh + h - 1, pw - qw + w - 1, qh, qw].reshape(n, h * w, h * w)  # [n, p, q]
    if mode == "distribute":
        out = out.transpose(1, 2)
    return out.reshape(n, h * w, h, w)


class PSABranch(nn.Module):
    """One direction's 1x1 ConvNormAct reduction and its attention predictor (1x1 ConvNormAct, then a
    bias-free 1x1 conv to ``mask_size[0] * mask_size[1]`` window weights)."""

    def __init__(self, in_channels: int, channels: int, mask_size: Sequence[int], mode: str):
        super().__init__()
        self.mode = mode
        self.reduce = ConvNormAct(in_channels, channels, 1)
        self.attention = nn.Sequential(ConvNormAct(channels, channels, 1),
                                       nn.Conv2d(channels, mask_size[0] * mask_size[1], 1, bias=False))


@register_head("psa")
class PSAHead(DecodeHead):
    """``psa_type``: "collect", "distribute" or "bi-direction"; ``shrink_factor``: the branches work
    on the map shrunk by it (bilinear; corners aligned when both sides are odd, and then the
    projection is resized back with aligned corners too, as the reference does); ``psa_softmax``:
    a softmax over each pixel's attention weights; ``normalization_factor`` divides the aggregate
    (None: the window's size)."""

    def __init__(self, in_channels, num_classes, channels=512, psa_type="bi-direction", mask_size=(97, 97),
                 shrink_factor=2, psa_softmax=True, normalization_factor=None, in_index=-1, dropout=0.1,
                 align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        if psa_type not in ("collect", "distribute", "bi-direction"):
            raise ValueError(f"psa_type must be 'collect', 'distribute' or 'bi-direction', got {psa_type!r}")
        self.mask_size = tuple(int(s) for s in mask_size)
        self.shrink_factor = int(shrink_factor)
        self.psa_softmax = bool(psa_softmax)
        self.normalization_factor = float(normalization_factor if normalization_factor is not None
                                          else self.mask_size[0] * self.mask_size[1])
        modes = ("collect", "distribute") if psa_type == "bi-direction" else (psa_type,)
        self.branches = nn.ModuleList(PSABranch(self.in_channels, channels, self.mask_size, m) for m in modes)
        self.project = ConvNormAct(channels * len(modes), self.in_channels, 1, padding=1)
        self.bottleneck = ConvNormAct(self.in_channels * 2, channels, 3)

    @property
    def min_feature_size(self) -> int:
        """The branches shrink the map by ``shrink_factor``: a side under it would vanish."""
        return self.shrink_factor

    def _shrunk(self, h: int, w: int) -> tuple[tuple[int, int], bool]:
        """The branches' map size and the align_corners of the resizes to and from it."""
        s = self.shrink_factor
        if s == 1:
            return (h, w), self.align_corners
        if h % s and w % s:
            return ((h - 1) // s + 1, (w - 1) // s + 1), True
        return (h // s, w // s), False

    def forward(self, feats) -> torch.Tensor:
        x = self.select(feats)
        (h, w), align_corners = self._shrunk(*x.shape[-2:])
        outs = []
        for branch in self.branches:
            y = branch.reduce(x)
            n, c = y.shape[:2]
            if self.shrink_factor != 1:
                y = resize(y, (h, w), align_corners)
            attn = psa_mask(branch.attention(y), branch.mode, self.mask_size)
            if self.psa_softmax:
                attn = attn.softmax(dim=1)
            y = torch.bmm(y.reshape(n, c, h * w), attn.reshape(n, h * w, h * w)).view(n, c, h, w)
            outs.append(y * (1.0 / self.normalization_factor))
        y = resize(self.project(torch.cat(outs, dim=1)), x.shape[-2:], align_corners)
        return self.classify(self.bottleneck(torch.cat([x, y], dim=1)))


# ---- SSSegmentation ---------------------------------------------------------------------------------
_PSA_OPTIONS = {"in_channels", "feats_channels", "type", "mask_size", "shrink_factor", "psa_softmax",
                "normalization_factor", "compact", "dropout"}


def _branch_rules(suffix: str, k: int) -> list[tuple[str, str]]:
    """SSSegmentation's ``reduce{suffix}`` and ``attention{suffix}`` (Sequential(conv, norm, act, conv))
    -> ``branches.k``."""
    dst = f"decode_head.branches.{k}"
    return [*cna_rules(f"reduce{suffix}", f"{dst}.reduce"), *cna_rules(f"attention{suffix}", f"{dst}.attention.0"),
            (rf"^attention{suffix}\.3\.", f"{dst}.attention.1.")]


# one branch: reduce / attention; bi-direction: collect's reduce / attention, distribute's reduce_p / attention_p
@ssseg_segmentor("PSANet", "psanet", [
    *_branch_rules("", 0), *_branch_rules("_p", 1), *cna_rules(r"proj", "decode_head.project"),
    *cna_rules(r"decoder", "decode_head.bottleneck"), (r"^decoder\.4\.", "decode_head.classifier.")])
def from_ssseg(cfg: dict, sel: list) -> dict:
    head = cfg["head"]
    check_options(head, _PSA_OPTIONS, "PSANet head")
    if head.get("compact", False):  # the attention is then read as a dense (hw, hw) map, mask_size = map size
        raise UnsupportedConfig("PSANet with compact=True is not ported")
    if head["type"] not in ("collect", "distribute", "bi-direction"):
        raise UnsupportedConfig(f"PSANet type {head['type']!r} is not ported")
    nf = head.get("normalization_factor")
    return {"type": "psa", "in_index": sel[-1], "psa_type": head["type"],
            "mask_size": [int(s) for s in head["mask_size"]], "shrink_factor": int(head["shrink_factor"]),
            "psa_softmax": bool(head["psa_softmax"]), "normalization_factor": None if nf is None else float(nf),
            **head_options(cfg)}
