"""DANet head (dual attention): a position-attention branch and a channel-attention branch, each
between two 3x3 ConvNormAct, summed; then the classifier. Each branch also has its own
classifier, which only training uses (see ``segzoo.models.segmentors.danet``).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from ..foreign import check_options, cna_rules, head_options, ssseg_segmentor
from ..layers import ConvNormAct, SelfAttention
from .base import DecodeHead, register_head

__all__ = ["PositionAttention", "ChannelAttention", "DAHead"]


class PositionAttention(nn.Module):
    """Position attention module: each pixel attends to every pixel (norm-free 1x1 query/key
    projections to ``transform_channels``, a 1x1 value projection, unscaled dot products); the
    context scaled by the learnt ``gamma`` (0 at initialisation) is added to the input."""

    def __init__(self, channels: int, transform_channels: int):
        super().__init__()
        self.attention = SelfAttention(channels, channels, transform_channels, channels, key_query_num_convs=1,
                                       value_out_num_convs=1, key_query_norm=False, value_out_norm=False,
                                       matmul_norm=False, with_out_project=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x) * self.gamma + x


class ChannelAttention(nn.Module):
    """Channel attention module: each channel is a mix of all channels, weighted by a softmax over
    (the largest channel similarity minus) their Gram-matrix similarities; scaled by the learnt
    ``gamma`` (0 at initialisation) and added to the input."""

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)                                       # (n, c, hw)
        energy = torch.bmm(flat, flat.transpose(1, 2))            # (n, c, c)
        energy = energy.max(dim=-1, keepdim=True)[0].expand_as(energy) - energy
        out = torch.bmm(energy.softmax(dim=-1), flat).view_as(x)
        return out * self.gamma + x


def _classify_branch(channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    """Dropout + a 1x1 classifier (a ``classifier`` child, which ``num_classes=`` re-initialises)."""
    return nn.Sequential(OrderedDict([("dropout", nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()),
                                      ("classifier", nn.Conv2d(channels, num_classes, kernel_size=1))]))


@register_head("da")
class DAHead(DecodeHead):
    """``forward(feats)``: the logits of the summed branches; :meth:`forward_all` adds each
    branch's own logits."""

    def __init__(self, in_channels, num_classes, channels=512, transform_channels=64, in_index=-1, dropout=0.1,
                 align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.pam_in_conv = ConvNormAct(self.in_channels, channels, 3)
        self.pam = PositionAttention(channels, transform_channels)
        self.pam_out_conv = ConvNormAct(channels, channels, 3)
        self.cam_in_conv = ConvNormAct(self.in_channels, channels, 3)
        self.cam = ChannelAttention()
        self.cam_out_conv = ConvNormAct(channels, channels, 3)
        self.pam_classify = _classify_branch(channels, num_classes, dropout)
        self.cam_classify = _classify_branch(channels, num_classes, dropout)

    def _branches(self, feats) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.select(feats)
        pam = self.pam_out_conv(self.pam(self.pam_in_conv(x)))
        cam = self.cam_out_conv(self.cam(self.cam_in_conv(x)))
        return pam, cam

    def forward(self, feats) -> torch.Tensor:
        pam, cam = self._branches(feats)
        return self.classify(pam + cam)

    def forward_all(self, feats) -> dict[str, torch.Tensor]:
        """``{"logits", "pam_logits", "cam_logits"}``: the summed branches' logits and each branch's."""
        pam, cam = self._branches(feats)
        return {"logits": self.classify(pam + cam), "pam_logits": self.pam_classify(pam),
                "cam_logits": self.cam_classify(cam)}


# ---- SSSegmentation ---------------------------------------------------------------------------------
_DA_OPTIONS = {"in_channels", "feats_channels", "transform_channels", "dropout"}
_PAM = "decode_head.pam.attention"


@ssseg_segmentor("DANet", "danet", [
    *cna_rules(r"pam_in_conv", "decode_head.pam_in_conv"),
    *[(rf"^pam_net\.{p}_project\.weight$", f"{_PAM}.{p}_project.0.conv.weight") for p in ("key", "query", "value")],
    (r"^pam_net\.gamma\.scale$", "decode_head.pam.gamma"),
    *cna_rules(r"pam_out_conv", "decode_head.pam_out_conv"),
    *cna_rules(r"cam_in_conv", "decode_head.cam_in_conv"),
    (r"^cam_net\.gamma\.scale$", "decode_head.cam.gamma"),
    *cna_rules(r"cam_out_conv", "decode_head.cam_out_conv"),
    (r"^decoder_pam\.1\.", "decode_head.pam_classify.classifier."),
    (r"^decoder_cam\.1\.", "decode_head.cam_classify.classifier."),
    (r"^decoder_pamcam\.1\.", "decode_head.classifier.")])
def from_ssseg(cfg: dict, sel: list) -> dict:
    head = cfg["head"]
    check_options(head, _DA_OPTIONS, "DANet head")
    return {"type": "da", "in_index": sel[-1], "transform_channels": int(head["transform_channels"]),
            **head_options(cfg)}
