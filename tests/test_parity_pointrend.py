"""Parity with sssegmentation==1.7.0: PointRend (Semantic FPN coarse head + point head, test-time
subdivision) on ResNet-V1c (ResNet-50 and ResNet-101, os32).

The reference imports mmcv's compiled ``point_sample``, missing here (its module then holds None):
the reference build (``tests/_ssseg.build_ssseg``) puts segzoo's plain-PyTorch
:func:`~segzoo.models.heads.pointrend.point_sample` in its place (same call signature; checked
against loops in ``test_ops_point_sample.py``). Its point head norms
1-D point features, which ``BatchNorm2d`` refuses: the reference keeps the config's
``SyncBatchNorm``, plain batch norm without a process group.

Random weights and calibrated BatchNorm statistics in the reference, its checkpoint loaded strictly
(``create_model(checkpoint=...)``), eval logits compared on a random non-square input large enough
that the second subdivision step refines only the most uncertain pixels; then, from the same random seed, the
train-mode outputs and the reference's losses.
"""
import pytest
import torch
import torch.nn.functional as F

from segzoo.models.heads.pointrend import point_sample
from _ssseg import build_ssseg, load_reference, rel_diff, ssseg_logits

CONFIGS = ["pointrend_resnet50os32_ade20k", "pointrend_resnet101os32_cityscapes"]


@pytest.mark.parametrize("config", CONFIGS)
def test_pointrend_parity(config, tmp_path):
    ref, cfg = build_ssseg(config)
    model = load_reference(ref, config, tmp_path)
    assert type(model).__name__ == "PointRend"

    x = torch.randn(1, 3, 96, 136)  # coarse 24x34 -> 48x68 (every pixel refined) -> 96x136 (8196 of them)
    assert 48 * 68 <= model.decode_head.subdivision_points < 96 * 136
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape == (1, cfg["num_classes"], 96, 136)
    assert rel_diff(ours, theirs) <= 1e-4

    # train mode, the same random points: the point logits -> loss_cls (against the labels sampled at
    # the points), the coarse logits -> loss_aux; their losses as the reference computes them
    from ssseg.modules.utils import SSSegInputStructure
    x, labels = torch.randn(2, 3, 64, 96), torch.randint(0, cfg["num_classes"], (2, 64, 96))
    ref.train()
    model.train()
    torch.manual_seed(1)
    theirs = ref(SSSegInputStructure(images=x, seg_targets=labels, mode="TRAIN")).losses_log_dict
    torch.manual_seed(1)
    out = model(x)
    assert set(out) == {"logits", "points", "aux_logits"} and set(model.losses_of(out)) == set(cfg["losses"])
    assert out["logits"].shape == (2, cfg["num_classes"], 2048) and out["points"].shape == (2, 2048, 2)
    assert [a.shape for a in out["aux_logits"]] == [(2, cfg["num_classes"], 16, 24)]
    point_labels = point_sample(labels[:, None].float(), out["points"], mode="nearest")[:, 0].long()
    loss_cls = F.cross_entropy(out["logits"], point_labels, ignore_index=-100)
    coarse = F.interpolate(out["aux_logits"][0], size=(64, 96), mode="bilinear", align_corners=False)
    loss_aux = cfg["losses"]["loss_aux"]["scale_factor"] * F.cross_entropy(coarse, labels, ignore_index=-100)
    assert loss_cls.item() == pytest.approx(theirs["loss_cls"], rel=1e-4)
    assert loss_aux.item() == pytest.approx(theirs["loss_aux"], rel=1e-4)
