"""Segmentors with a neck between the backbone and the heads, and FastFCN (a JPU neck under a
DeepLabV3, PSPNet or EncNet head).

The neck is described in the decode head config (``{"type": "with_neck", "neck": ..., "head": ...}``,
see ``segzoo.models.heads.fpn``): the decode head is built for the neck's outputs and records the
neck's config, from which :class:`NeckSegmentor` builds ``self.neck``.
"""
from __future__ import annotations

import torch

from ..heads.fpn import build_neck
from ..segmentor import Segmentor, register_segmentor

__all__ = ["NeckSegmentor", "FastFCN"]


class NeckSegmentor(Segmentor):
    """backbone -> ``neck`` -> decode head (and auxiliary heads, on the same neck outputs).
    ``forward(x)``: logits (N, C, h, w) in eval mode; in train mode a dict with ``logits`` and
    ``aux_logits`` (list), as :class:`Segmentor`."""

    def __init__(self, backbone, decode_head, aux_heads=(), align_corners: bool = False):
        neck_cfg = getattr(decode_head, "neck_cfg", None)
        if neck_cfg is None:
            raise ValueError(f"{type(self).__name__} needs a decode head with a neck: "
                             "{'type': 'with_neck', 'neck': {...}, 'head': {...}}")
        super().__init__(backbone, decode_head, aux_heads, align_corners)
        self.neck = build_neck(neck_cfg, backbone.out_channels, align_corners)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps the heads read: the backbone's, through the neck."""
        return self.neck(self.backbone(x))

    def forward(self, x: torch.Tensor):
        feats = self.features(x)
        logits = self.decode_head(feats)
        if not self.training:
            return logits
        return {"logits": logits, "aux_logits": [h(feats) for h in self.aux_heads]}


@register_segmentor("fastfcn")
class FastFCN(NeckSegmentor):
    """FastFCN: the backbone's last levels through a JPU neck (``segzoo.models.heads.jpu``), then a
    DeepLabV3 (``aspp``), PSPNet (``psp``) or EncNet (``enc``) head; the auxiliary FCN head reads a
    backbone level the JPU passes through.

    ``forward(x)``: the head's logits (N, C, h, w) in eval mode. In train mode a dict with

    * ``logits``: the segmentation logits at head resolution -> ``loss_cls`` (cross-entropy);
    * ``aux_logits``: the auxiliary FCN head's logits (list) -> ``loss_aux``;
    * ``se_logits`` (EncNet head with its SE branch only): image-level class-presence logits
      (N, num_classes) -> ``loss_se`` (see ``segzoo.models.segmentors.encnet.EncNet``).

    :attr:`LOSSES` says the same as a mapping: output key -> the reference config's loss name."""

    LOSSES = {"logits": "loss_cls", "aux_logits": "loss_aux", "se_logits": "loss_se"}

    def forward(self, x: torch.Tensor):
        feats = self.features(x)
        if not self.training:
            return self.decode_head(feats)
        se_logits = None
        if hasattr(self.decode_head, "forward_with_se"):
            logits, se_logits = self.decode_head.forward_with_se(feats)
        else:
            logits = self.decode_head(feats)
        out = {"logits": logits, "aux_logits": [h(feats) for h in self.aux_heads]}
        if se_logits is not None:
            out["se_logits"] = se_logits
        return out
