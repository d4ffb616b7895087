"""Parity with sssegmentation==1.7.0: CCNet on ResNet-V1c (ResNet-50 os8, ResNet-101 os16).

The reference imports mmcv's ``CrissCrossAttention``, missing here (``ssseg``'s CCNet module then
holds None): the test monkeypatches that name with :class:`MMCVCrissCrossAttention`, mmcv's module
(its constructor, parameters and call) around segzoo's :func:`criss_cross_attention` operator,
which ``tests/test_ops_attention.py`` checks against the operator's definition.

Random weights (the attention's ``gamma``, 0 at initialisation, set non-zero so that the
attention reaches the logits, and its queries scaled down so that its softmax is not one-hot) and
calibrated BatchNorm statistics in the reference, its checkpoint loaded strictly through
``create_model(checkpoint=...)``, eval logits compared on a random non-square input; then the
train-mode outputs.
"""
import pytest
import torch

from _ssseg import MMCVCrissCrossAttention, build_ssseg, check_train_outputs, load_reference, randomize_, rel_diff, ssseg_logits

CONFIGS = ["ccnet_resnet50os8_ade20k", "ccnet_resnet101os16_cityscapes"]


def _with_gamma(ref, seed: int = 1):
    """Set the attention's ``gamma`` non-zero and scale its queries down (random weights make its
    softmax one-hot, which would hide the cells it covers), then measure BatchNorm statistics again."""
    with torch.no_grad():
        ref.cca.gamma.scale.fill_(0.8)
        ref.cca.query_conv.weight.mul_(0.003)
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(seed))
    randomize_(ref, seed, calibrate=lambda: ssseg_logits(ref, x))
    return ref.eval()


@pytest.mark.parametrize("config", CONFIGS)
def test_ccnet_parity(config, tmp_path, monkeypatch):
    import ssseg.modules.models.segmentors.ccnet.ccnet as ref_ccnet
    monkeypatch.setattr(ref_ccnet, "CrissCrossAttention", MMCVCrissCrossAttention)
    ref, cfg = build_ssseg(config)
    ref = _with_gamma(ref)
    model = load_reference(ref, config, tmp_path)
    assert model.arch["decode_head"]["type"] == "cc" and model.decode_head.recurrence == 2
    assert float(model.decode_head.cca.gamma.detach()) == pytest.approx(0.8)
    x = torch.randn(1, 3, 72, 104)
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape
    assert rel_diff(ours, theirs) <= 1e-4

    check_train_outputs(model, cfg["num_classes"])
