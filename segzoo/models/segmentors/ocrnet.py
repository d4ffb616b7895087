"""OCRNet: backbone -> soft object regions (an FCN head) -> OCR head that reads them.

The soft-region head is ``aux_heads[0]``: it is what SSSegmentation (and mmseg) train with the
auxiliary loss, but here the decode head needs its output at inference too, so the generic
:class:`Segmentor` forward (auxiliary heads in training only) does not fit.
"""
from __future__ import annotations

import torch

from ..segmentor import Segmentor, register_segmentor

__all__ = ["OCRNet"]


@register_segmentor("ocrnet")
class OCRNet(Segmentor):
    """``forward(x)``: the OCR head's logits (N, C, h, w) in eval mode; in train mode a dict with
    ``logits`` and ``aux_logits`` (a one-element list: the soft-region head's logits, which the
    auxiliary loss supervises)."""

    aux_heads_in_inference = True

    def __init__(self, backbone, decode_head, aux_heads=(), align_corners: bool = False):
        if len(aux_heads) != 1:
            raise ValueError(f"OCRNet needs exactly one auxiliary head (its soft object regions), got {len(aux_heads)}")
        super().__init__(backbone, decode_head, aux_heads, align_corners)

    def forward(self, x: torch.Tensor):
        feats = self.backbone(x)
        soft_regions = self.aux_heads[0](feats)
        logits = self.decode_head(feats, soft_regions)
        if not self.training:
            return logits
        return {"logits": logits, "aux_logits": [soft_regions]}
