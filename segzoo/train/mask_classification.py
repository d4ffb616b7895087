"""The training criterion of mask-classification segmentors (MaskFormer, Mask2Former): a set of
``Q`` predicted (class, mask) pairs is matched one-to-one to the ground-truth segments by the
Hungarian algorithm, then the matched pairs learn their class and mask, the others "no object".

Defined as SSSegmentation 1.7.0 defines it (``segmentors/maskformer/transformers/criterion.py`` and
``matcher.py``, and Mask2Former's point-sampled versions in ``segmentors/mask2former/transformers``
with ``samplers/ugsampler.py``), written for segzoo:

* targets (:func:`semantic_targets`): one binary mask per class present in the label map (ascending
  class order), ``ignore_index`` pixels in none; an image with no labelled pixel gets one empty mask
  of class 0, as the reference does;
* matching cost (:class:`HungarianMatcher`): ``cost_class * -p(class) + cost_mask * mask cost +
  cost_dice * dice cost``, solved by ``scipy.optimize.linear_sum_assignment``. MaskFormer
  (``num_points=0``) compares the predicted masks with the targets resized to their resolution
  (nearest), with the sigmoid focal loss; Mask2Former (``num_points > 0``) at ``num_points`` uniform
  random points shared by all masks of an image, with the sigmoid cross-entropy;
* losses (:class:`MaskClassificationCriterion`): ``loss_ce``, cross-entropy over ``num_classes + 1``
  classes with weight ``eos_coef`` on "no object"; ``loss_mask`` and ``loss_dice`` on the matched
  masks, averaged over the number of target masks (summed over the batch and the processes).
  MaskFormer upsamples the predicted masks to the targets (bilinear) and uses the sigmoid focal loss;
  Mask2Former compares the masks at ``num_points`` points per mask, importance-sampled where the
  prediction is uncertain (``|logit|`` small: ``oversample_ratio``, ``importance_sample_ratio``),
  with the sigmoid cross-entropy. With ``deep_supervision`` each auxiliary prediction (one per
  decoder layer but the last) is matched and supervised the same way (``loss_ce_0``, ...).
  Each loss is multiplied by its cost weight, as both references weigh losses by the matcher costs.

The random points are drawn with ``torch.rand`` in the reference's order and shapes (per image for
the matcher, then per prediction set for the losses), so a run seeded like the reference draws the
same points.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..models.heads.pointrend import point_sample

__all__ = ["semantic_targets", "HungarianMatcher", "MaskClassificationCriterion", "sample_uncertain_points",
           "sigmoid_focal_loss", "sigmoid_ce_loss", "dice_loss"]


# ---- targets ------------------------------------------------------------------------------------
def semantic_targets(labels: torch.Tensor, ignore_index: int = 255) -> list[dict]:
    """Per image of ``labels`` (N, H, W): ``{"labels": (M,) long, "masks": (M, H, W) float}``, one
    mask per class present (ascending), ``ignore_index`` pixels in no mask; an image without any
    labelled pixel gets one all-zero mask of class 0."""
    out = []
    for seg in labels:
        classes = [c for c in torch.unique(seg).tolist() if c != ignore_index]
        if classes:
            ids = torch.tensor(classes, dtype=torch.long, device=seg.device)
            masks = (seg.unsqueeze(0) == ids.view(-1, 1, 1).to(seg.dtype)).float()
        else:
            ids = torch.zeros(1, dtype=torch.long, device=seg.device)
            masks = torch.zeros(1, *seg.shape, device=seg.device)
        out.append({"labels": ids, "masks": masks})
    return out


# ---- losses between masks -------------------------------------------------------------------------
def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss of (M, P) mask logits against binary targets: mean over P, sum over M,
    divided by ``num_masks``."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_masks


def sigmoid_ce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Binary cross-entropy of (M, P) mask logits: mean over P, sum over M, divided by ``num_masks``."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """``1 - (2|p t| + 1) / (|p| + |t| + 1)`` of (M, P) mask logits (p = sigmoid), summed over M,
    divided by ``num_masks``."""
    prob = logits.sigmoid().flatten(1)
    loss = 1 - (2 * (prob * targets).sum(-1) + 1) / (prob.sum(-1) + targets.sum(-1) + 1)
    return loss.sum() / num_masks


def _pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(Q, P) logits x (M, P) targets -> (Q, M) dice losses."""
    prob = logits.sigmoid()
    inter = prob @ targets.t()
    return 1 - (2 * inter + 1) / (prob.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1)


def _pairwise_focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                    gamma: float = 2.0) -> torch.Tensor:
    """(Q, P) logits x (M, P) targets -> (Q, M) sigmoid focal losses, averaged over P."""
    prob = logits.sigmoid()
    pos = (1 - prob) ** gamma * F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = prob ** gamma * F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    if alpha >= 0:
        pos, neg = pos * alpha, neg * (1 - alpha)
    return (pos @ targets.t() + neg @ (1 - targets).t()) / logits.shape[1]


def _pairwise_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(Q, P) logits x (M, P) targets -> (Q, M) sigmoid cross-entropies, averaged over P."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.t() + neg @ (1 - targets).t()) / logits.shape[1]


# ---- point sampling (Mask2Former) -----------------------------------------------------------------
def sample_uncertain_points(logits: torch.Tensor, num_points: int, oversample_ratio: float = 3.0,
                            importance_sample_ratio: float = 0.75) -> torch.Tensor:
    """Training points (M, num_points, 2), (x, y) in [0, 1], for (M, 1, H, W) mask logits: of
    ``num_points * oversample_ratio`` uniform random points, the ``importance_sample_ratio`` share
    where ``|logit|`` (sampled bilinearly) is smallest, then uniform random points for the rest.
    (``segzoo.models.heads.pointrend.sample_points`` measures uncertainty between two classes; a
    single mask's is ``-|logit|``.)"""
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError("need oversample_ratio >= 1 and 0 <= importance_sample_ratio <= 1")
    m = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(m, num_sampled, 2, device=logits.device)
    scores = -point_sample(logits, coords).abs()[:, 0]  # (m, num_sampled)
    num_uncertain = int(importance_sample_ratio * num_points)
    index = scores.topk(num_uncertain, dim=1)[1]
    points = torch.gather(coords, 1, index.unsqueeze(2).expand(-1, -1, 2))
    if num_points > num_uncertain:
        points = torch.cat([points, torch.rand(m, num_points - num_uncertain, 2, device=logits.device)], dim=1)
    return points


# ---- matching ---------------------------------------------------------------------------------------
class HungarianMatcher(nn.Module):
    """One-to-one assignment of predictions to targets minimising ``cost_class * -p(class) +
    cost_mask * mask cost + cost_dice * dice cost`` per image; ``num_points=0``: masks compared at the
    prediction's resolution with the focal cost (MaskFormer), else at ``num_points`` shared random
    points with the cross-entropy cost (Mask2Former)."""

    def __init__(self, cost_class: float = 1.0, cost_mask: float = 1.0, cost_dice: float = 1.0, num_points: int = 0):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matching costs are 0")
        self.cost_class, self.cost_mask, self.cost_dice = float(cost_class), float(cost_mask), float(cost_dice)
        self.num_points = int(num_points)

    @torch.no_grad()
    def forward(self, outputs: Mapping[str, torch.Tensor], targets: Sequence[dict]) -> list[tuple]:
        """[(prediction indices, target indices)] per image, both (min(Q, M),) long, on the CPU."""
        from scipy.optimize import linear_sum_assignment
        indices = []
        for b, target in enumerate(targets):
            prob = outputs["pred_logits"][b].softmax(-1)
            pred = outputs["pred_masks"][b]  # (Q, h, w)
            tgt = target["masks"].to(pred)
            cost_class = -prob[:, target["labels"]]
            if self.num_points > 0:
                coords = torch.rand(1, self.num_points, 2, device=pred.device)
                tgt = point_sample(tgt[:, None], coords.repeat(tgt.shape[0], 1, 1))[:, 0].float()
                pred = point_sample(pred[:, None], coords.repeat(pred.shape[0], 1, 1))[:, 0].float()
                cost_mask = _pairwise_ce(pred, tgt)
            else:
                tgt = F.interpolate(tgt[:, None], size=pred.shape[-2:], mode="nearest")[:, 0].flatten(1)
                pred = pred.flatten(1)
                cost_mask = _pairwise_focal(pred, tgt)
            cost_dice = _pairwise_dice(pred, tgt)
            cost = self.cost_mask * cost_mask + self.cost_class * cost_class + self.cost_dice * cost_dice
            rows, cols = linear_sum_assignment(cost.reshape(prob.shape[0], -1).cpu())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices


# ---- the criterion -------------------------------------------------------------------------------
class MaskClassificationCriterion(nn.Module):
    """``criterion(outputs, labels)`` -> ``{loss name: weighted loss}`` (sum them for the total).

    ``outputs``: ``pred_logits`` (N, Q, C + 1), ``pred_masks`` (N, Q, h, w) and, with deep
    supervision, ``aux_outputs`` (a list of dicts with the same two keys); ``labels``: (N, H, W)
    label maps with ``ignore_index``. Names: ``loss_ce``, ``loss_mask``, ``loss_dice`` and, for the
    i-th auxiliary prediction, ``loss_ce_i``, ... (the references' names). ``cost_*`` are both the
    matching costs and the loss weights. ``num_points=0``: MaskFormer's full-resolution focal + dice
    losses; ``num_points > 0``: Mask2Former's point-sampled cross-entropy + dice (the matcher uses
    ``matcher_num_points``, ``num_points`` by default)."""

    def __init__(self, num_classes: int, cost_class: float = 1.0, cost_mask: float = 20.0, cost_dice: float = 1.0,
                 eos_coef: float = 0.1, num_points: int = 0, oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75, matcher_num_points: int | None = None,
                 deep_supervision: bool = True, ignore_index: int = 255):
        super().__init__()
        self.num_classes = int(num_classes)
        self.weights = {"loss_ce": float(cost_class), "loss_mask": float(cost_mask), "loss_dice": float(cost_dice)}
        self.eos_coef = float(eos_coef)
        self.num_points = int(num_points)
        self.oversample_ratio, self.importance_sample_ratio = float(oversample_ratio), float(importance_sample_ratio)
        self.deep_supervision = bool(deep_supervision)
        self.ignore_index = int(ignore_index)
        self.matcher = HungarianMatcher(cost_class, cost_mask, cost_dice,
                                        self.num_points if matcher_num_points is None else matcher_num_points)
        empty_weight = torch.ones(self.num_classes + 1)
        empty_weight[-1] = self.eos_coef
        self.register_buffer("empty_weight", empty_weight)  # both references keep it in their state dicts

    @classmethod
    def from_model(cls, model: nn.Module, **overrides) -> "MaskClassificationCriterion":
        """The criterion of a mask-classification segmentor (``segzoo.models.segmentors.maskformer``):
        its head's ``criterion`` options (``overrides`` replace some) and its class weights
        (``model.criterion.empty_weight``, as loaded from a checkpoint), on the model's device."""
        cfg = dict(getattr(model.decode_head, "criterion_cfg", {}), **overrides)
        crit = cls(model.num_classes, **cfg)
        state = getattr(getattr(model, "criterion", None), "empty_weight", None)
        if state is not None and "eos_coef" not in overrides:
            if state.shape != crit.empty_weight.shape:
                raise ValueError(f"model.criterion.empty_weight has shape {tuple(state.shape)}, expected "
                                 f"{tuple(crit.empty_weight.shape)} for {model.num_classes} classes")
            crit.empty_weight.copy_(state.detach())
        return crit.to(state.device if state is not None else "cpu")

    def loss_labels(self, outputs, targets, indices) -> torch.Tensor:
        logits = outputs["pred_logits"]
        classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src = torch.cat([s for s, _ in indices])
        classes[batch.to(logits.device), src.to(logits.device)] = torch.cat(
            [t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, indices)]).to(logits.device)
        return F.cross_entropy(logits.transpose(1, 2), classes, self.empty_weight.to(logits.dtype))

    def loss_masks(self, outputs, targets, indices, num_masks: float) -> tuple[torch.Tensor, torch.Tensor]:
        pred = outputs["pred_masks"]
        batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(pred.device)
        src = torch.cat([s for s, _ in indices]).to(pred.device)
        pred = pred[batch, src]  # (M, h, w)
        tgt = torch.cat([t["masks"][j.to(t["masks"].device)] for t, (_, j) in zip(targets, indices)]).to(pred)
        if self.num_points > 0:
            with torch.no_grad():
                points = sample_uncertain_points(pred[:, None].detach(), self.num_points, self.oversample_ratio,
                                                 self.importance_sample_ratio)
                point_tgt = point_sample(tgt[:, None], points)[:, 0]
            point_pred = point_sample(pred[:, None], points)[:, 0]
            return sigmoid_ce_loss(point_pred, point_tgt, num_masks), dice_loss(point_pred, point_tgt, num_masks)
        pred = F.interpolate(pred[:, None], size=tgt.shape[-2:], mode="bilinear", align_corners=False)[:, 0].flatten(1)
        tgt = tgt.flatten(1)
        return sigmoid_focal_loss(pred, tgt, num_masks), dice_loss(pred, tgt, num_masks)

    def _losses(self, outputs, targets, num_masks: float, suffix: str = "") -> dict:
        indices = self.matcher(outputs, targets)
        ce = self.loss_labels(outputs, targets, indices)
        mask, dice = self.loss_masks(outputs, targets, indices, num_masks)
        w = self.weights
        return {f"loss_ce{suffix}": ce * w["loss_ce"], f"loss_mask{suffix}": mask * w["loss_mask"],
                f"loss_dice{suffix}": dice * w["loss_dice"]}

    def forward(self, outputs: Mapping, labels: torch.Tensor | Sequence[dict]) -> dict:
        targets = semantic_targets(labels, self.ignore_index) if isinstance(labels, torch.Tensor) else list(labels)
        device = outputs["pred_logits"].device
        num_masks = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
            world = dist.get_world_size()
        num_masks = torch.clamp(num_masks / world, min=1).item()
        losses = self._losses(outputs, targets, num_masks)
        if self.deep_supervision:
            for i, aux in enumerate(outputs.get("aux_outputs") or ()):
                losses.update(self._losses(aux, targets, num_masks, f"_{i}"))
        return losses
