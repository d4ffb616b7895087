"""The losses of segzoo.train equal SSSegmentation 1.7.0's on random logits and labels with ignored
pixels (segzoo's ignore label 255, the reference's -100), and the criterion builds the targets of
each kind of train output (maps, SE class presence, PointRend points)."""
import pytest
import torch

from segzoo.train.losses import SegmentationCriterion, build_loss, class_presence

ssseg_losses = pytest.importorskip("ssseg.modules.models.losses.builder")

CASES = [
    {"type": "CrossEntropyLoss", "scale_factor": 0.4},
    {"type": "CrossEntropyLoss", "class_weight": [0.5, 1.0, 2.0, 1.5, 0.7]},
    {"type": "CrossEntropyLoss", "label_smoothing": 0.1},
    {"type": "CrossEntropyLoss", "use_sigmoid": True, "scale_factor": 0.2},
    {"type": "CrossEntropyLoss", "use_sigmoid": True, "class_weight": [0.5, 1.0, 2.0, 1.5, 0.7]},
    {"type": "DiceLoss", "scale_factor": 3.0},
    {"type": "DiceLoss", "naive_dice": True, "use_sigmoid": False},
    {"type": "FocalLoss", "gamma": 2.0, "alpha": 0.25},
    {"type": "FocalLoss", "use_sigmoid": False, "class_weight": [0.5, 1.0, 2.0, 1.5, 0.7]},
    {"type": "LovaszLoss"},
    {"type": "LovaszLoss", "per_image": True, "classes": "all"},
    {"type": "LovaszLoss", "class_weight": [0.5, 1.0, 2.0, 1.5, 0.7]},
]


def _data(seed=0, n=2, c=5, h=9, w=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g) * 3  # float32, as training runs (the reference mixes in float32 one-hots)
    labels = torch.randint(0, c, (n, h, w), generator=g)
    labels[torch.rand(n, h, w, generator=g) < 0.2] = 255
    return logits, labels


@pytest.mark.parametrize("cfg", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items() if k != "type")
                         or c["type"])
def test_loss_equals_reference(cfg):
    logits, labels = _data()
    ref_labels = labels.clone()
    ref_labels[labels == 255] = -100
    ours = build_loss({**cfg, "ignore_index": -100}, ignore_index=255)(logits, labels)
    theirs = ssseg_losses.BuildLoss(dict(cfg, ignore_index=-100))(logits, ref_labels)
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=0), (float(ours), float(theirs))


@pytest.mark.parametrize("kind", ["CrossEntropyLoss", "DiceLoss"])
def test_one_hot_targets_equal_reference(kind):
    logits, labels = _data(1)
    onehot = torch.nn.functional.one_hot(labels.clamp(max=4), 5).movedim(-1, 1).float()
    cfg = {"type": kind, "use_sigmoid": True}
    ours = build_loss(cfg)(logits, onehot)
    theirs = ssseg_losses.BuildLoss(dict(cfg))(logits, onehot)
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=0)


def test_class_presence_matches_encnet_reference():
    from ssseg.modules.models.segmentors.encnet.encnet import ENCNet
    _, labels = _data(2)
    labels[0] = 3
    theirs = ENCNet.onehot(None, labels.where(labels != 255, -100), 5)
    assert torch.equal(class_presence(labels, 5), theirs.float())
    assert class_presence(labels, 5)[0].tolist() == [0, 0, 0, 1, 0]


def test_unknown_loss_and_bad_option_say_so():
    with pytest.raises(ValueError, match="unknown loss type 'Nope'.*CrossEntropyLoss"):
        build_loss({"type": "Nope"})
    with pytest.raises(ValueError, match="CrossEntropyLoss: .*gamma"):
        build_loss({"type": "CrossEntropyLoss", "gamma": 2})


class _Toy(torch.nn.Module):
    LOSSES = {"logits": "loss_cls", "aux_logits": "loss_aux", "se_logits": "loss_se"}

    def losses_of(self, outputs):
        from segzoo.models import Segmentor
        return Segmentor.losses_of(self, outputs)


def test_criterion_builds_each_target_and_sums_like_the_reference():
    logits, labels = _data(3, h=16, w=20)
    small = logits[..., ::4, ::4].contiguous()
    se = torch.randn(2, 5)
    losses = {"loss_cls": {"type": "CrossEntropyLoss", "scale_factor": 1.0, "ignore_index": -100},
              "loss_aux": {"type": "CrossEntropyLoss", "scale_factor": 0.4, "ignore_index": -100},
              "loss_se": {"type": "CrossEntropyLoss", "use_sigmoid": True, "scale_factor": 0.2}}
    crit = SegmentationCriterion(losses)
    total, parts = crit(_Toy(), {"logits": logits, "aux_logits": [small], "se_logits": se}, labels)
    up = torch.nn.functional.interpolate(small, size=(16, 20), mode="bilinear", align_corners=False)
    ref_labels = labels.where(labels != 255, -100)
    expect = {"loss_cls": ssseg_losses.BuildLoss(losses["loss_cls"])(logits, ref_labels),
              "loss_aux": ssseg_losses.BuildLoss(losses["loss_aux"])(up, ref_labels),
              "loss_se": ssseg_losses.BuildLoss(losses["loss_se"])(se, class_presence(labels, 5))}
    assert parts == pytest.approx({k: float(v) for k, v in expect.items()}, rel=1e-6)
    assert float(total) == pytest.approx(float(sum(expect.values())), rel=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        crit(_Toy(), {"logits": logits, "aux_logits": [small]}, labels)
