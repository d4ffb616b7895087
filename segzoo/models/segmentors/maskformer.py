"""Mask-classification segmentors: the decode head predicts ``Q`` (class, mask) pairs
(``segzoo.models.heads.maskformer``) and inference combines them into semantic logits."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..segmentor import Segmentor, register_segmentor

__all__ = ["MaskClassificationSegmentor", "MaskFormer", "CriterionState", "semantic_logits"]


def semantic_logits(pred_logits: torch.Tensor, pred_masks: torch.Tensor, size=None,
                    align_corners: bool = False) -> torch.Tensor:
    """Semantic logits (N, C, h, w) of mask-classification predictions, as both references compute
    semantic inference: class probabilities (softmax, "no object" dropped) times mask probabilities
    (sigmoid), summed over the queries: scores in [0, Q], not log-probabilities (argmax is the
    prediction). ``size``: resize the mask logits to it first (bilinear)."""
    if size is not None and tuple(pred_masks.shape[-2:]) != tuple(size):
        pred_masks = F.interpolate(pred_masks, size=tuple(size), mode="bilinear", align_corners=align_corners)
    classes = F.softmax(pred_logits, dim=-1)[..., :-1]
    return torch.einsum("bqc,bqhw->bchw", classes, pred_masks.sigmoid())


class CriterionState(nn.Module):
    """What the mask-classification criterion keeps in both references' state dicts: ``empty_weight``,
    the (C + 1) class weights of its cross-entropy (1, and ``eos_coef`` for "no object"). The criterion
    itself (matching, losses) is training code, which this package does not import:
    ``segzoo.train.mask_classification.MaskClassificationCriterion.from_model(model)`` builds it from
    the head's ``criterion`` options and these weights."""

    def __init__(self, num_classes: int, eos_coef: float = 0.1):
        super().__init__()
        weight = torch.ones(num_classes + 1)
        weight[-1] = eos_coef
        self.register_buffer("empty_weight", weight)

    def forward(self, *args, **kwargs):
        raise RuntimeError("model.criterion holds the criterion's class weights only; the criterion is "
                           "segzoo.train.mask_classification.MaskClassificationCriterion.from_model(model)")


class MaskClassificationSegmentor(Segmentor):
    """Backbone -> a mask-classification decode head, whose output is a dict with ``pred_logits``
    (N, Q, C + 1) and ``pred_masks`` (N, Q, h, w) (and ``aux_outputs`` in training).

    ``forward(x)`` in eval mode: semantic logits (N, C, H', W') by :func:`semantic_logits`, at the
    input's size where the head's ``semantic_at`` is "input" (the masks resized first), else at the
    mask resolution (``forward_upsampled`` resizes the logits). In train mode a dict with

    * ``pred_logits``, ``pred_masks``, ``aux_outputs`` (one ``{pred_logits, pred_masks}`` per decoder
      layer but the last): what the mask-classification criterion reads to give the references'
      ``loss_ce``, ``loss_mask``, ``loss_dice`` and their ``_i`` auxiliary versions:
      ``MaskClassificationCriterion.from_model(model)(outputs, labels)`` with (N, H, W) label maps
      (``segzoo.train.mask_classification``; built from the head's ``criterion`` options);
    * ``logits``: the semantic logits at the mask resolution (monitoring only, no loss);
    * ``aux_logits``: the auxiliary heads' logits (none in the zoo) -> ``loss_aux``.

    :attr:`criterion` (:class:`CriterionState`) holds the criterion's ``empty_weight`` buffer (its class
    weights), part of the state dict as in both references' checkpoints."""

    #: eval outputs are class scores (>= 0, summed query probabilities), not logits: predict's "probs"
    #: normalises them instead of a softmax
    outputs_scores = True
    LOSSES = {"pred_logits": None, "pred_masks": None, "aux_outputs": None, "logits": None, "aux_logits": "loss_aux"}

    def __init__(self, backbone, decode_head, aux_heads=(), align_corners: bool = False):
        super().__init__(backbone, decode_head, aux_heads, align_corners)
        cfg = getattr(decode_head, "criterion_cfg", {})
        self.criterion = CriterionState(decode_head.num_classes, float(cfg.get("eos_coef", 0.1)))

    @property
    def num_classes(self) -> int:
        return self.decode_head.num_classes

    @property
    def min_input_size(self) -> int:
        """The backbone's, or more where the head needs ``min_feature_size`` cells on its deepest level."""
        size = int(getattr(self.backbone, "min_input_size", 1))
        cells = int(getattr(self.decode_head, "min_feature_size", 1))
        reductions = getattr(self.backbone, "reductions", None)
        if cells > 1 and reductions:
            size = max(size, cells * int(reductions[self.decode_head.in_index[-1]]))
        return size

    def forward(self, x: torch.Tensor):
        feats = self.backbone(x)
        out = self.decode_head(feats)
        if not self.training:
            size = x.shape[-2:] if self.decode_head.semantic_at == "input" else None
            return semantic_logits(out["pred_logits"], out["pred_masks"], size, self.align_corners)
        out = dict(out)
        out.setdefault("aux_outputs", [])
        out["logits"] = semantic_logits(out["pred_logits"], out["pred_masks"])
        out["aux_logits"] = [h(feats) for h in self.aux_heads]
        return out


@register_segmentor("maskformer")
class MaskFormer(MaskClassificationSegmentor):
    """MaskFormer (``segzoo.models.heads.maskformer``); see :class:`MaskClassificationSegmentor`."""
