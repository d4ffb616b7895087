"""EncNet: backbone -> context-encoding head (``segzoo.models.heads.enc``), whose encoding also
feeds the SE-loss branch in training."""
from __future__ import annotations

import torch

from ..segmentor import Segmentor, register_segmentor

__all__ = ["EncNet"]


@register_segmentor("encnet")
class EncNet(Segmentor):
    """``forward(x)``: the head's logits (N, C, h, w) in eval mode. In train mode a dict with

    * ``logits``: the segmentation logits at head resolution -> ``loss_cls`` (cross-entropy);
    * ``aux_logits``: the auxiliary FCN heads' logits (list) -> ``loss_aux``;
    * ``se_logits`` (when the head has its SE branch): image-level class-presence logits
      (N, num_classes) -> ``loss_se``: sigmoid binary cross-entropy against the one-hot set of
      classes present in each image's label map (ignored labels left out).

    :attr:`LOSSES` says the same as a mapping: output key -> the reference config's loss name."""

    LOSSES = {"logits": "loss_cls", "aux_logits": "loss_aux", "se_logits": "loss_se"}

    def features(self, x: torch.Tensor):
        """The feature maps the heads read (a neck may be put behind the backbone by overriding this)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor):
        feats = self.features(x)
        if not self.training:
            return self.decode_head(feats)
        logits, se_logits = self.decode_head.forward_with_se(feats)
        out = {"logits": logits, "aux_logits": [h(feats) for h in self.aux_heads]}
        if se_logits is not None:
            out["se_logits"] = se_logits
        return out
