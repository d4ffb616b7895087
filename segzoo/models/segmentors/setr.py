"""SETR-MLA: backbone -> MLA neck (inside the ``setr_mla`` decode head) -> decode head; the auxiliary
heads read the neck's outputs, not the backbone's, so the generic :class:`Segmentor` forward does not fit.

SETR-Naive / SETR-PUP (``setr_up``) need no class of their own: each of their heads (decode and
auxiliary) reads one backbone map through its own LayerNorm, the generic composition.
"""
from __future__ import annotations

import torch

from ..segmentor import Segmentor, register_segmentor

__all__ = ["SETRMLA"]


@register_segmentor("setr_mla")
class SETRMLA(Segmentor):
    """``forward(x)``: the MLA head's logits (N, C, h, w) in eval mode; in train mode a dict with
    ``logits`` (loss ``loss_cls``) and ``aux_logits``, one per auxiliary head, each on one of the last
    MLA neck outputs (losses ``loss_aux1``, ``loss_aux2``, ... in the reference's order)."""

    def forward(self, x: torch.Tensor):
        neck = self.decode_head.neck(self.backbone(x))
        logits = self.decode_head.decode(neck)
        if not self.training:
            return logits
        return {"logits": logits, "aux_logits": [h(neck) for h in self.aux_heads]}
