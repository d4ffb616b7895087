"""Semantic FPN (backbone -> FPN neck -> FPN head) and PointRend (the same, with the FPN head's
coarse prediction refined at its uncertain points: ``segzoo.models.heads.pointrend``)."""
from __future__ import annotations

import torch

from ..segmentor import register_segmentor
from .fastfcn import NeckSegmentor

__all__ = ["SemanticFPN", "PointRend"]


@register_segmentor("semanticfpn")
class SemanticFPN(NeckSegmentor):
    """Semantic FPN: the backbone's levels through an FPN neck, then the ``fpn`` head.
    ``forward(x)``: logits (N, C, h, w) at the finest level's resolution in eval mode; in train mode
    ``{"logits", "aux_logits"}`` (``logits`` -> ``loss_cls``)."""


@register_segmentor("pointrend")
class PointRend(SemanticFPN):
    """PointRend on Semantic FPN. ``forward(x)`` in eval mode: the subdivided logits (N, C, H', W')
    (the coarse logits at the finest level, upsampled ``subdivision_steps`` times, the most uncertain
    pixels re-predicted by the point head each time). In train mode a dict with

    * ``logits``: the point head's logits (N, C, P) at ``points`` -> ``loss_cls``, against the labels
      sampled at the same points (``point_sample(labels[:, None].float(), points, mode="nearest",
      align_corners=model.align_corners)[:, 0].long()``, ``segzoo.models.heads.pointrend``);
    * ``points``: (N, P, 2) the training points, (x, y) in [0, 1] of the image;
    * ``aux_logits``: ``[coarse logits (N, C, h, w)]`` -> ``loss_aux`` (upsampled to the labels).

    :attr:`LOSSES` says the same as a mapping: output key -> the reference config's loss name."""

    LOSSES = {"logits": "loss_cls", "points": None, "aux_logits": "loss_aux"}

    def forward(self, x: torch.Tensor):
        feats = self.features(x)
        if not self.training:
            return self.decode_head(feats)
        logits, points, coarse = self.decode_head.forward_train(feats)
        return {"logits": logits, "points": points, "aux_logits": [coarse, *(h(feats) for h in self.aux_heads)]}
