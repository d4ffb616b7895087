"""Parity with sssegmentation==1.7.0: PSANet on ResNet-V1c (ResNet-50 os8, ResNet-101 os16; every zoo
config is bi-directional with a 97x97 mask, shrink factor 2).

The reference imports mmcv's ``PSAMask``, missing here (``ssseg``'s PSANet module then holds None):
the test monkeypatches that name with :class:`MMCVPSAMask`, mmcv's module (its constructor and
call) around segzoo's :func:`psa_mask` operator, which ``tests/test_ops_attention.py`` checks
against mmcv's kernels written out as loops.

Random weights and calibrated BatchNorm statistics in the reference, its checkpoint loaded
strictly through ``create_model(checkpoint=...)``, eval logits compared on random non-square inputs
(the branches' map shrunk from both sides odd, with aligned corners, from both even, and from one
odd); then the train-mode outputs.
"""
import pytest
import torch

from _ssseg import MMCVPSAMask, build_ssseg, load_reference, rel_diff, ssseg_logits

CONFIGS = ["psanet_resnet50os8_cityscapes", "psanet_resnet101os16_ade20k"]


@pytest.mark.parametrize("config", CONFIGS)
def test_psanet_parity(config, tmp_path, monkeypatch):
    import ssseg.modules.models.segmentors.psanet.psanet as ref_psanet
    monkeypatch.setattr(ref_psanet, "PSAMask", MMCVPSAMask)
    ref, cfg = build_ssseg(config)
    model = load_reference(ref, config, tmp_path)
    head = model.decode_head
    assert model.arch["decode_head"]["type"] == "psa" and [b.mode for b in head.branches] == ["collect", "distribute"]
    stride = model.backbone.reductions[-1]
    for map_size in ((9, 13), (8, 12), (9, 12)):
        x = torch.randn(1, 3, map_size[0] * stride, map_size[1] * stride)
        with torch.no_grad():
            ours = model(x)
        theirs = ssseg_logits(ref, x)
        assert ours.shape == theirs.shape == (1, cfg["num_classes"], *map_size)
        assert rel_diff(ours, theirs) <= 1e-4

    model.train()
    out = model(torch.randn(2, 3, 64, 96))
    assert set(out) == {"logits", "aux_logits"} and len(out["aux_logits"]) == 1
    assert out["logits"].shape == out["aux_logits"][0].shape == (2, cfg["num_classes"], 64 // stride, 96 // stride)
    out["logits"].mean().backward()  # through the mask operator to both attention predictors
    assert all(b.attention[1].weight.grad.abs().sum() > 0 for b in head.branches)
