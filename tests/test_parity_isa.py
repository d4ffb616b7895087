"""Parity with sssegmentation==1.7.0: ISANet on ResNet-V1c (ResNet-50 and ResNet-101, os8: the zoo
has no other).

Random weights and calibrated BatchNorm statistics in the reference, its checkpoint loaded
strictly through ``create_model(checkpoint=...)``, eval logits compared on random non-square inputs
(one whose map the 8x8 blocks do not divide, so the attention pads it, one they divide); then
the train-mode outputs.
"""
import pytest
import torch

from _ssseg import build_ssseg, load_reference, rel_diff, ssseg_logits

CONFIGS = ["isanet_resnet50os8_voc", "isanet_resnet101os8_cityscapes"]


@pytest.mark.parametrize("config", CONFIGS)
def test_isanet_parity(config, tmp_path):
    ref, cfg = build_ssseg(config)
    model = load_reference(ref, config, tmp_path)
    assert model.arch["decode_head"]["type"] == "isa" and model.decode_head.down_factor == (8, 8)
    for size in ((72, 104), (64, 128)):  # maps 9x13 (padded to 16x16) and 8x16
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            ours = model(x)
        theirs = ssseg_logits(ref, x)
        assert ours.shape == theirs.shape == (1, cfg["num_classes"], size[0] // 8, size[1] // 8)
        assert rel_diff(ours, theirs) <= 1e-4

    model.train()
    out = model(torch.randn(2, 3, 64, 96))
    assert set(out) == {"logits", "aux_logits"} and len(out["aux_logits"]) == 1
    assert out["logits"].shape == out["aux_logits"][0].shape == (2, cfg["num_classes"], 8, 12)
