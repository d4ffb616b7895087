"""Mask2Former: backbone -> ``mask2former`` head (``segzoo.models.heads.mask2former``), whose queries
each predict a class and a mask; semantic inference combines them."""
from __future__ import annotations

import torch

from ..segmentor import register_segmentor
from .maskformer import MaskClassificationSegmentor, semantic_logits

__all__ = ["Mask2Former"]


@register_segmentor("mask2former")
class Mask2Former(MaskClassificationSegmentor):
    """``forward(x)`` in eval mode: semantic scores (N, C, h, w), each class's probability summed over
    the queries (softmax over C + 1 classes without "no object", times the mask's sigmoid), as both
    references' semantic inference computes them: with the mask logits resized to the input size
    (h, w = H, W; SSSegmentation) or to the head's ``mask_size`` (384 x 384 for transformers'
    ``post_process_semantic_segmentation``, which then resizes the scores to the image's size, as
    :meth:`forward_upsampled` does). The scores lie in [0, Q], they are not logits.

    In train mode the dict of :class:`MaskClassificationSegmentor`: ``pred_logits`` (N, Q, C + 1, the
    last column "no object"), ``pred_masks`` (N, Q, H/4, W/4) and ``aux_outputs`` (deep supervision: one
    ``{"pred_logits", "pred_masks"}`` per decoder layer, first to last: from the learnt queries before
    the first layer, then after every layer but the last), which ``model.criterion`` (Hungarian matching;
    the reference's ``loss_ce``, ``loss_mask``, ``loss_dice`` and ``<name>_<i>`` for the i-th
    ``aux_outputs``) reads; ``logits`` (monitoring) and ``aux_logits`` (none in the zoo)."""

    def forward(self, x: torch.Tensor):
        if self.training:
            return super().forward(x)
        out = self.decode_head(self.backbone(x))
        size = self.decode_head.mask_size or tuple(x.shape[-2:])
        return semantic_logits(out["pred_logits"], out["pred_masks"], size, self.align_corners)
