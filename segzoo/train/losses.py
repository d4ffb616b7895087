"""Segmentation losses and the criterion that applies a recipe's ``losses`` to a model's train outputs.

Each loss is defined as SSSegmentation 1.7.0 defines it (``ssseg.modules.models.losses``), written
for segzoo: the parity tests compare them on random inputs. Recipes name losses as the zoo configs
do (``{"type": "CrossEntropyLoss", "scale_factor": 0.4, ...}``, or a list of those, summed).

Targets are label maps with ``ignore_index`` (255 in segzoo's datasets) for unlabelled pixels. The
zoo configs write ``ignore_index: -100``, SSSegmentation's code for "the dataset's ignore label";
:class:`SegmentationCriterion` reads that as the recipe's ignore index.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.layers import resize

__all__ = ["LOSSES", "register_loss", "build_loss", "CrossEntropyLoss", "DiceLoss", "FocalLoss", "LovaszLoss",
           "SegmentationCriterion", "class_presence"]

LOSSES: dict[str, type] = {}
REFERENCE_IGNORE = -100  # SSSegmentation's "ignore label of the dataset" in the zoo configs


def register_loss(name: str) -> Callable[[type], type]:
    """Class decorator: recipes build the loss ``{"type": name, ...}`` with the decorated class."""
    def deco(cls: type) -> type:
        LOSSES[name] = cls
        return cls
    return deco


def _flatten(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *) -> (N * prod(*), C)."""
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def _one_hot_targets(logits: torch.Tensor, target: torch.Tensor, ignore_index: int):
    """Flattened logits and one-hot float targets of the labelled elements: (M, C), (M, C). A target
    of the logits' shape is already (soft) one-hot: then the class ``ignore_index`` (if a class index)
    is dropped instead."""
    num_classes = logits.shape[1]
    if target.shape == logits.shape:
        keep = torch.arange(num_classes, device=logits.device) != ignore_index
        return _flatten(logits)[:, keep], _flatten(target).float()[:, keep], None
    flat = _flatten(logits)
    labels = target.reshape(-1).long()
    valid = labels != ignore_index
    onehot = F.one_hot(labels[valid].clamp(0, num_classes), num_classes + 1).float()
    onehot = onehot[:, 1:2] if num_classes == 1 else onehot[:, :num_classes]
    return flat[valid], onehot, valid


def _reduce(loss: torch.Tensor, reduction: str, avg_factor=None) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean() if avg_factor is None else loss.sum() / avg_factor
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class _Loss(nn.Module):
    """Common options: ``scale_factor`` (the loss's weight in the total) and ``lowest_loss_value``
    (the loss is reflected at that floor: ``|loss - v| + v``)."""

    def __init__(self, scale_factor: float = 1.0, lowest_loss_value: float | None = None,
                 ignore_index: int = 255, reduction: str = "mean"):
        super().__init__()
        self.scale_factor, self.lowest_loss_value = float(scale_factor), lowest_loss_value
        self.ignore_index, self.reduction = int(ignore_index), reduction

    def _class_weighted(self, loss: torch.Tensor, onehot: torch.Tensor, one_hot_input: bool, num_classes: int):
        """(loss times ``class_weight`` per class, the weighted mean's divisor: the targets' total class
        weight, or None for a plain mean) for losses with ``class_weight`` /
        ``norm_loss_with_class_weight``; a one-hot target drops the class ``ignore_index``."""
        if getattr(self, "class_weight", None) is None:
            return loss, None
        cw = loss.new_tensor(self.class_weight)
        if one_hot_input:
            cw = cw[torch.arange(num_classes, device=cw.device) != self.ignore_index]
        avg = (cw[None] * onehot).sum() if self.norm_loss_with_class_weight else None
        return loss * cw[None], avg

    def _finish(self, loss: torch.Tensor) -> torch.Tensor:
        loss = loss * self.scale_factor
        if self.lowest_loss_value is not None:
            loss = (loss - self.lowest_loss_value).abs() + self.lowest_loss_value
        return loss


@register_loss("CrossEntropyLoss")
class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy over the classes (``use_sigmoid=False``) or per-class sigmoid binary
    cross-entropy (``use_sigmoid=True``, EncNet's SE loss), with ``class_weight`` (the weighted
    mean divides by the targets' total class weight unless ``norm_loss_with_class_weight=False``),
    ``label_smoothing`` and ``ignore_index``. Targets: a label map (N, *) or one-hot (N, C, *)."""

    def __init__(self, use_sigmoid: bool = False, class_weight=None, label_smoothing: float | None = None,
                 norm_loss_with_class_weight: bool = True, **common):
        super().__init__(**common)
        self.use_sigmoid, self.label_smoothing = bool(use_sigmoid), label_smoothing
        self.class_weight = None if class_weight is None else [float(w) for w in class_weight]
        self.norm_loss_with_class_weight = bool(norm_loss_with_class_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        if not self.use_sigmoid and num_classes < 2:
            raise ValueError("softmax cross-entropy needs at least 2 classes")
        if self.reduction == "none":
            raise ValueError("CrossEntropyLoss: reduction='none' is not supported by segzoo's criterion")
        if not self.use_sigmoid and not self.label_smoothing and target.shape != logits.shape:
            # label maps: the same (weighted) mean over the labelled pixels as the one-hot form below,
            # without materialising (pixels x classes) one-hot targets
            labels = target.long().where(target != self.ignore_index, -100) if self.ignore_index != -100 \
                else target.long()
            weight = logits.new_tensor(self.class_weight) if self.class_weight is not None else None
            if weight is not None and not self.norm_loss_with_class_weight:
                per = F.cross_entropy(logits, labels, weight=weight, ignore_index=-100, reduction="none")
                loss = per.sum() if self.reduction == "sum" else per.sum() / (labels != -100).sum()
            else:
                loss = F.cross_entropy(logits, labels, weight=weight, ignore_index=-100, reduction=self.reduction)
            return self._finish(loss)
        x, onehot, valid = _one_hot_targets(logits, target, self.ignore_index)
        if self.use_sigmoid:
            loss = F.binary_cross_entropy_with_logits(x, onehot, reduction="none")
        else:
            smoothing = 0.0 if self.label_smoothing is None else float(self.label_smoothing)
            per = F.cross_entropy(x, onehot.argmax(1), reduction="none", label_smoothing=smoothing)
            loss = per[:, None] * onehot
        loss, avg = self._class_weighted(loss, onehot, valid is None, num_classes)
        if not self.use_sigmoid:
            loss = loss.sum(1)
        return self._finish(_reduce(loss, self.reduction, avg))


@register_loss("DiceLoss")
class DiceLoss(_Loss):
    """Dice loss per (image, class) over the pixels, ``1 - 2|XY| / (|X|^2 + |Y|^2)`` (or the naive
    ``(2|XY| + eps) / (|X| + |Y| + eps)``), on sigmoid or softmax probabilities (``activate``);
    ignored pixels count for neither."""

    def __init__(self, use_sigmoid: bool = True, activate: bool = True, naive_dice: bool = False, eps: float = 1e-3,
                 **common):
        super().__init__(**common)
        self.use_sigmoid, self.activate, self.naive_dice, self.eps = bool(use_sigmoid), bool(activate), naive_dice, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = logits
        if self.activate:
            x = x.sigmoid() if self.use_sigmoid else (x.softmax(1) if x.shape[1] > 1 else x)
        num_classes = x.shape[1]
        if target.shape == x.shape:
            keep = torch.arange(num_classes, device=x.device) != self.ignore_index
            x, y = x[:, keep], target[:, keep].float()
        else:
            mask = (target != self.ignore_index).unsqueeze(1).float()
            onehot = F.one_hot(target.long().clamp(0, num_classes), num_classes + 1).float()
            onehot = onehot[..., 1:2] if num_classes == 1 else onehot[..., :num_classes]
            y = onehot.movedim(-1, 1) * mask
            x = x * mask
        x, y = x.flatten(1), y.flatten(1)
        inter = (x * y).sum(1)
        if self.naive_dice:
            dice = (2 * inter + self.eps) / (x.sum(1) + y.sum(1) + self.eps)
        else:
            dice = 2 * inter / (((x * x).sum(1) + self.eps) + ((y * y).sum(1) + self.eps))
        return self._finish(_reduce(1 - dice, self.reduction))


@register_loss("FocalLoss")
class FocalLoss(_Loss):
    """Focal loss: sigmoid (``BCE * (alpha y + (1 - alpha)(1 - y)) * |y - p|^gamma`` per class) or
    softmax (``alpha (1 - p_t)^gamma CE``), with ``class_weight`` as in :class:`CrossEntropyLoss`."""

    def __init__(self, use_sigmoid: bool = True, gamma: float = 2.0, alpha: float = 0.25, class_weight=None,
                 norm_loss_with_class_weight: bool = True, **common):
        super().__init__(**common)
        self.use_sigmoid, self.gamma, self.alpha = bool(use_sigmoid), float(gamma), float(alpha)
        self.class_weight = None if class_weight is None else [float(w) for w in class_weight]
        self.norm_loss_with_class_weight = bool(norm_loss_with_class_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        x, y, valid = _one_hot_targets(logits, target, self.ignore_index)
        if self.use_sigmoid:
            p = x.sigmoid()
            one_minus_pt = (1 - p) * y + p * (1 - y)
            weight = (self.alpha * y + (1 - self.alpha) * (1 - y)) * one_minus_pt.pow(self.gamma)
            loss = F.binary_cross_entropy_with_logits(x, y, reduction="none") * weight
        else:
            ce = F.cross_entropy(x, y.argmax(1), reduction="none")[:, None]
            probs = x.softmax(1)
            pt = probs * y + (1 - probs) * (1 - y)
            loss = self.alpha * (1 - pt).pow(self.gamma) * ce * y
        loss, avg = self._class_weighted(loss, y, valid is None, num_classes)
        if not self.use_sigmoid:
            loss = loss.sum(1)
        return self._finish(_reduce(loss, self.reduction, avg))


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss at errors sorted in decreasing order."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if len(gt_sorted) > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


@register_loss("LovaszLoss")
class LovaszLoss(_Loss):
    """Lovász-softmax loss: the Lovász extension of each class's Jaccard loss on the softmax
    probabilities, over the classes present (``classes="present"``), all, or a given list; their
    mean (weighted by ``class_weight`` if given), per image then averaged (``per_image=True``) or
    over the batch at once."""

    def __init__(self, use_sigmoid: bool = False, classes="present", per_image: bool = False, class_weight=None,
                 **common):
        super().__init__(**common)
        if use_sigmoid:
            raise ValueError("LovaszLoss: only the softmax form is implemented (use_sigmoid=False)")
        if not (classes in ("all", "present") or all(isinstance(c, int) for c in classes)):
            raise ValueError("LovaszLoss: classes must be 'all', 'present' or a list of class ids")
        self.classes, self.per_image = classes, bool(per_image)
        self.class_weight = None if class_weight is None else [float(w) for w in class_weight]

    def _one(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y, valid = _one_hot_targets(probs, target, self.ignore_index)
        num_classes = probs.shape[1]
        ids = range(num_classes) if self.classes in ("all", "present") else sorted(set(self.classes))
        losses, weights = [], []
        for c in ids:
            if valid is None and c == self.ignore_index:
                continue
            fg = y[:, c]
            if self.classes == "present" and fg.sum() == 0:
                continue
            errors_sorted, perm = torch.sort((fg - x[:, c]).abs(), 0, descending=True)
            losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[perm])))
            if self.class_weight is not None:
                weights.append(self.class_weight[c])
        loss = torch.stack(losses).reshape(-1)
        if self.class_weight is not None:
            w = loss.new_tensor(weights)
            return (loss * w).sum() / w.sum()
        return loss.mean()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(1) if logits.shape[1] > 1 else logits
        if self.per_image:
            loss = torch.stack([self._one(p[None], t[None]) for p, t in zip(probs, target)])
        else:
            loss = self._one(probs, target)
        return self._finish(_reduce(loss, self.reduction))


def build_loss(cfg: Mapping[str, Any], ignore_index: int = 255) -> nn.Module:
    """The loss a recipe entry describes (``{"type": ..., **options}``). ``ignore_index=-100`` (the
    zoo configs' "dataset's ignore label") and an absent one become ``ignore_index``."""
    cfg = dict(cfg)
    kind = cfg.pop("type")
    if kind not in LOSSES:
        raise ValueError(f"unknown loss type {kind!r}; known: {', '.join(sorted(LOSSES))}")
    if cfg.get("ignore_index", REFERENCE_IGNORE) == REFERENCE_IGNORE:
        cfg["ignore_index"] = ignore_index
    try:
        return LOSSES[kind](**cfg)
    except TypeError as e:
        raise ValueError(f"{kind}: {e}") from None


def class_presence(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, C) 0/1: which classes appear in each label map (ignored values count for none): the
    target of EncNet's SE loss."""
    n = labels.shape[0]
    flat = labels.reshape(n, -1).long()
    valid = (flat >= 0) & (flat < num_classes)
    out = torch.zeros(n, num_classes + 1, dtype=torch.float32, device=labels.device)
    out.scatter_(1, torch.where(valid, flat, num_classes), 1.0)
    return out[:, :num_classes]


def _point_labels(labels: torch.Tensor, points: torch.Tensor, align_corners: bool) -> torch.Tensor:
    from ..models.heads.pointrend import point_sample
    return point_sample(labels[:, None].float(), points, mode="nearest", align_corners=align_corners)[:, 0].long()


class SegmentationCriterion(nn.Module):
    """A recipe's ``losses`` applied to a segmentor's train-mode outputs.

    ``model.losses_of(outputs)`` names the prediction each loss supervises; its target follows from
    the prediction's shape: a (N, C, h, w) map is resized (bilinear) to the labels' size and compared
    with them; (N, C) scores with the classes present in each image (:func:`class_presence`); (N, C, P)
    point logits with the labels sampled at ``outputs["points"]``. Mask-classification outputs
    (``pred_logits``, ``pred_masks``) add the Hungarian-matching set losses. Returns the total and
    each loss's value (detached), as SSSegmentation's ``calculatelosses`` sums them."""

    def __init__(self, losses: Mapping[str, Any], ignore_index: int = 255, align_corners: bool = False):
        super().__init__()
        self.ignore_index, self.align_corners = int(ignore_index), bool(align_corners)
        self.specs = {name: [cfg] if isinstance(cfg, Mapping) else list(cfg) for name, cfg in losses.items()}
        self.losses = nn.ModuleDict({name: nn.ModuleList(build_loss(c, self.ignore_index) for c in cfgs)
                                     for name, cfgs in self.specs.items()})

    def target_for(self, pred: torch.Tensor, labels: torch.Tensor, outputs: Mapping[str, Any]):
        if pred.dim() == 4:
            return resize(pred, labels.shape[-2:], self.align_corners), labels
        if pred.dim() == 2:
            return pred, class_presence(labels, pred.shape[1])
        if pred.dim() == 3 and "points" in outputs:
            return pred, _point_labels(labels, outputs["points"], self.align_corners)
        raise ValueError(f"no target rule for a prediction of shape {tuple(pred.shape)}")

    def _set_criterion(self, model: nn.Module):
        """The Hungarian-matching criterion of a mask-classification model (MaskFormer, Mask2Former),
        built once from the model (``segzoo.train.mask_classification``)."""
        if getattr(self, "_set", None) is None:
            from .mask_classification import MaskClassificationCriterion
            self._set = MaskClassificationCriterion.from_model(model, ignore_index=self.ignore_index)
        return self._set

    def forward(self, model: nn.Module, outputs: Mapping[str, Any], labels: torch.Tensor):
        extra, specs = {}, self.specs
        preds = model.losses_of(outputs)
        if isinstance(outputs, Mapping) and "pred_logits" in outputs:  # mask classification: matched queries
            extra = self._set_criterion(model)(outputs, labels)
            specs = {k: v for k, v in specs.items() if k in preds}  # the set losses stand for the rest
        missing = sorted(set(specs) - set(preds))
        unused = sorted(set(preds) - set(specs))
        if missing or unused:
            raise ValueError(f"the recipe's losses ({', '.join(sorted(specs))}) do not match the model's "
                             f"train outputs ({', '.join(sorted(preds))})")
        values = dict(extra)
        for name, fns in self.losses.items():
            if name not in specs:
                continue
            pred, target = self.target_for(preds[name], labels, outputs)
            values[name] = sum(fn(pred, target) for fn in fns)
        total = sum(v.mean() for v in values.values())
        return total, {k: float(v.detach().mean()) for k, v in values.items()}
