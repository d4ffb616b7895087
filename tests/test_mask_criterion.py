"""The mask-classification criterion (``segzoo.train.mask_classification``) against SSSegmentation
1.7.0's: MaskFormer's ``SetCriterion`` + ``HungarianMatcher`` (full-resolution focal + dice) and
Mask2Former's (point-sampled cross-entropy + dice, ``UGSampler``), on the same random predictions
(with deep supervision) and label maps (ignored pixels, an image with no labelled pixel).

Every loss term and the weighted total agree to 1e-5 relative, and so do the gradients on the
predictions. Mask2Former's matcher and sampler draw random points: both sides are seeded alike and
draw them in the same order and shapes, so the comparison covers the random parts too. The
reference's labels mark ignored pixels with -100 (its ``formattargets`` default), ours with 255.
"""
import pytest
import torch

from segzoo.train.mask_classification import MaskClassificationCriterion, semantic_targets

NUM_CLASSES = 5


def _labels(seed: int = 0) -> torch.Tensor:
    """(3, 48, 61) label maps: blocky regions of classes 0..4 with ignored (255) pixels; the third
    image is all ignored."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, NUM_CLASSES, (3, 1, 6, 8), generator=g).float()
    labels = torch.nn.functional.interpolate(small, size=(48, 61), mode="nearest")[:, 0].long()
    labels[torch.rand(labels.shape, generator=g) < 0.1] = 255
    labels[2] = 255
    return labels


def _outputs(seed: int = 1, num_aux: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)

    def one():
        return {"pred_logits": (torch.randn(3, 8, NUM_CLASSES + 1, generator=g) * 2).requires_grad_(),
                "pred_masks": (torch.randn(3, 8, 12, 15, generator=g) * 3).requires_grad_()}
    out = one()
    out["aux_outputs"] = [one() for _ in range(num_aux)]
    return out


def _leaves(outputs: dict) -> list:
    sets = [outputs, *outputs["aux_outputs"]]
    return [t for s in sets for t in (s["pred_logits"], s["pred_masks"])]


def _reference_losses(criterion, outputs: dict, labels: torch.Tensor) -> dict:
    """The reference criterion's losses weighted as SSSegmentation's MaskFormer/Mask2Former forward
    weighs them (``weight_dict``; keys it does not name dropped)."""
    ref_labels = labels.clone()
    ref_labels[ref_labels == 255] = -100
    losses = criterion(outputs, {"seg_targets": ref_labels})
    return {k: v * criterion.weight_dict[k] for k, v in losses.items() if k in criterion.weight_dict}


def _weight_dict(costs: dict, num_aux: int) -> dict:
    w = {"loss_ce": costs["cost_class"], "loss_mask": costs["cost_mask"], "loss_dice": costs["cost_dice"]}
    w.update({f"{k}_{i}": v for i in range(num_aux) for k, v in list(w.items())})
    return w


def _compare(ours_fn, theirs_fn, seed: int = 0):
    """Run both criteria on identical copies of the predictions, each after ``torch.manual_seed(seed)``."""
    labels = _labels()
    out_a, out_b = _outputs(), _outputs()
    torch.manual_seed(seed)
    ours = ours_fn(out_a, labels)
    torch.manual_seed(seed)
    theirs = theirs_fn(out_b, labels)
    assert set(ours) == set(theirs) and len(ours) == 9
    for k in theirs:
        assert abs(float((ours[k] - theirs[k]).detach())) <= 1e-5 * abs(float(theirs[k].detach())) + 1e-7, k
    total_a, total_b = sum(ours.values()), sum(theirs.values())
    assert abs(float((total_a - total_b).detach())) <= 1e-5 * abs(float(total_b.detach()))
    total_a.backward()
    total_b.backward()
    for a, b in zip(_leaves(out_a), _leaves(out_b)):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7)
    return float(total_a.detach())


def test_maskformer_criterion_matches_ssseg():
    from ssseg.modules.models.segmentors.maskformer.transformers import HungarianMatcher, SetCriterion
    costs = {"cost_class": 1.0, "cost_mask": 20.0, "cost_dice": 1.0}  # the zoo's MaskFormer configs
    ref = SetCriterion(NUM_CLASSES, matcher=HungarianMatcher(**costs), weight_dict=_weight_dict(costs, 2), eos_coef=0.1,
                       losses=["labels", "masks"])
    ours = MaskClassificationCriterion(NUM_CLASSES, **costs, eos_coef=0.1, num_points=0)
    total = _compare(ours, lambda o, y: _reference_losses(ref, o, y))
    print(f"MaskFormer criterion total {total:.5f}")


@pytest.mark.parametrize("seed", [0, 3])
def test_mask2former_criterion_matches_ssseg(seed):
    from ssseg.modules.models.segmentors.mask2former.transformers import HungarianMatcher, SetCriterion
    costs = {"cost_class": 2.0, "cost_mask": 5.0, "cost_dice": 5.0}  # the zoo's Mask2Former configs
    points = 40  # 12544 in the zoo; fewer than the 12x15 mask cells, so the importance sampling matters
    sampler = {"type": "UGSampler", "num_points": points, "oversample_ratio": 3.0, "importance_sample_ratio": 0.75,
               "reformat_target": False}
    ref = SetCriterion(NUM_CLASSES, matcher=HungarianMatcher(**costs, num_points=points),
                       weight_dict=_weight_dict(costs, 2), eos_coef=0.1, losses=["labels", "masks"],
                       pixelsampler_cfg=sampler)
    ours = MaskClassificationCriterion(NUM_CLASSES, **costs, eos_coef=0.1, num_points=points, oversample_ratio=3.0,
                                       importance_sample_ratio=0.75)
    total = _compare(ours, lambda o, y: _reference_losses(ref, o, y), seed=seed)
    print(f"Mask2Former criterion total {total:.5f}")


def test_semantic_targets():
    labels = torch.tensor([[[3, 3, 255], [1, 3, 1]], [[255, 255, 255], [255, 255, 255]]])
    t0, t1 = semantic_targets(labels, ignore_index=255)
    assert t0["labels"].tolist() == [1, 3]
    assert t0["masks"].tolist() == [[[0, 0, 0], [1, 0, 1]], [[1, 1, 0], [0, 1, 0]]]
    assert t1["labels"].tolist() == [0] and t1["masks"].sum() == 0 and t1["masks"].shape == (1, 2, 3)


def test_deep_supervision_off_and_errors():
    out = _outputs()
    losses = MaskClassificationCriterion(NUM_CLASSES, deep_supervision=False)(out, _labels())
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"}
    with pytest.raises(ValueError, match="oversample_ratio"):
        MaskClassificationCriterion(NUM_CLASSES, num_points=10, oversample_ratio=0.5)(out, _labels())
