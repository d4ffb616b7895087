"""Confusion-matrix segmentation metrics: mIoU, mAcc, aAcc, mDice and per-class IoU, in percent.

Definitions as SSSegmentation 1.7.0's evaluation (``ssseg.modules.datasets.pipelines.evaluation``):
labels outside ``[0, num_classes)`` (``ignore_index`` among them) are left out; a class with no
pixel in either the labels or the predictions has no IoU (NaN) and the means skip it.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["SegmentationMetrics"]


class SegmentationMetrics:
    """Accumulates a (num_classes x num_classes) confusion matrix (rows: label, columns: prediction)
    over ``update(pred, label)`` calls; ``all_reduce()`` sums it across the processes of a
    ``torch.distributed`` group; ``compute()`` gives the metrics."""

    def __init__(self, num_classes: int, class_names=None):
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.float64)

    def update(self, pred, label) -> None:
        """Add one prediction (class ids) and its label map (same shape; any int dtype, tensor or array)."""
        pred = torch.as_tensor(np.asarray(pred) if not isinstance(pred, torch.Tensor) else pred).reshape(-1)
        label = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label).reshape(-1)
        if pred.shape != label.shape:
            raise ValueError(f"prediction and label differ in size: {pred.numel()} vs {label.numel()} pixels")
        pred, label = pred.to("cpu", torch.int64), label.to("cpu", torch.int64)
        keep = (label >= 0) & (label < self.num_classes) & (pred >= 0) & (pred < self.num_classes)
        n = self.num_classes
        self.confusion += torch.bincount(label[keep] * n + pred[keep], minlength=n * n).reshape(n, n).double()

    def all_reduce(self) -> None:
        """Sum the confusion matrices of every process (no-op outside a distributed run)."""
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            backend = dist.get_backend()
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
            t = self.confusion.to(device)
            dist.all_reduce(t)
            self.confusion = t.cpu()

    def compute(self) -> dict:
        """``{"mIoU", "mAcc", "aAcc", "mDice", "IoU": {class: value}, "Acc": {...}}`` in percent
        (per-class values NaN where undefined)."""
        cm = self.confusion
        inter = cm.diag()
        area_label, area_pred = cm.sum(1), cm.sum(0)
        union = area_label + area_pred - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = (inter / union).numpy()
            acc = (inter / area_label).numpy()
            dice = (2 * inter / (area_label + area_pred)).numpy()
            total = float(area_label.sum())

        def mean(v):
            return float(np.nanmean(v)) * 100 if np.isfinite(v).any() else math.nan

        return {"mIoU": mean(iou), "mAcc": mean(acc), "aAcc": float(inter.sum()) / total * 100 if total else math.nan,
                "mDice": mean(dice),
                "IoU": {name: float(v) * 100 for name, v in zip(self.class_names, iou)},
                "Acc": {name: float(v) * 100 for name, v in zip(self.class_names, acc)}}
