"""segzoo's metrics equal SSSegmentation 1.7.0's evaluation on the same predictions and labels (random,
with ignored pixels and a class absent from both), and accumulate across calls."""
import math

import numpy as np
import pytest

from segzoo.train.metrics import SegmentationMetrics

evaluation = pytest.importorskip("ssseg.modules.datasets.pipelines.evaluation")


def _pairs(seed=0, n=3, c=6):
    rng = np.random.RandomState(seed)
    preds, labels = [], []
    for i in range(n):
        h, w = 20 + i, 30 - i
        p = rng.randint(0, c - 1, (h, w))          # class c-1 never predicted ...
        y = rng.randint(0, c - 1, (h, w))          # ... nor labelled: NaN IoU, skipped by the means
        y[rng.rand(h, w) < 0.15] = 255
        preds.append(p.astype(np.int32))
        labels.append(y.astype(np.int32))
    return preds, labels


def test_metrics_equal_reference():
    preds, labels = _pairs()
    metrics = SegmentationMetrics(6)
    for p, y in zip(preds, labels):
        metrics.update(p, y)
    ours = metrics.compute()
    ref_labels = [np.where(y == 255, -1, y) for y in labels]  # the reference's evaluate maps ignored pixels to -1
    theirs = evaluation.Evaluation(preds, ref_labels, 6, ignore_index=-1).all_metric_results
    assert ours["mIoU"] == pytest.approx(theirs["miou"] * 100, rel=1e-12)
    assert ours["mAcc"] == pytest.approx(np.nanmean(theirs["accuracy"]) * 100, rel=1e-12)
    assert ours["aAcc"] == pytest.approx(theirs["all_accuracy"] * 100, rel=1e-12)
    assert ours["mDice"] == pytest.approx(theirs["mdice"] * 100, rel=1e-12)
    iou = list(ours["IoU"].values())
    assert np.allclose(np.array(iou[:5]), theirs["iou"][:5] * 100, rtol=1e-12)
    assert math.isnan(iou[5]) and math.isnan(theirs["iou"][5])


def test_metrics_reject_mismatched_sizes():
    with pytest.raises(ValueError, match="differ in size"):
        SegmentationMetrics(3).update(np.zeros((4, 4)), np.zeros((4, 5)))
