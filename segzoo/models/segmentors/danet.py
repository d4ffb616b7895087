"""DANet: backbone -> dual-attention head, whose two branches are also supervised on their own
in training; the generic :class:`Segmentor` forward returns the decode head's logits only."""
from __future__ import annotations

import torch

from ..segmentor import Segmentor, register_segmentor

__all__ = ["DANet"]


@register_segmentor("danet")
class DANet(Segmentor):
    """``forward(x)``: the logits of the summed attention branches (N, C, h, w) in eval mode; in
    train mode a dict, all at head resolution, whose entries feed SSSegmentation's losses:

    * ``logits``: the summed branches' logits (``loss_cls_pamcam``);
    * ``aux_logits``: the auxiliary FCN heads' logits (``loss_aux``);
    * ``pam_logits``: the position-attention branch's own logits (``loss_cls_pam``);
    * ``cam_logits``: the channel-attention branch's own logits (``loss_cls_cam``).

    :attr:`LOSSES` says the same as a mapping: output key -> the reference config's loss name."""

    LOSSES = {"logits": "loss_cls_pamcam", "aux_logits": "loss_aux", "pam_logits": "loss_cls_pam",
              "cam_logits": "loss_cls_cam"}

    def forward(self, x: torch.Tensor):
        feats = self.backbone(x)
        if not self.training:
            return self.decode_head(feats)
        out = self.decode_head.forward_all(feats)
        return {"logits": out["logits"], "aux_logits": [h(feats) for h in self.aux_heads],
                "pam_logits": out["pam_logits"], "cam_logits": out["cam_logits"]}
