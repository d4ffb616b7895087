"""Parity with sssegmentation==1.7.0: Semantic FPN (FPN neck + FPN head) on ResNet-V1c (ResNet-50 and
ResNet-101, os32).

Random weights and calibrated BatchNorm statistics in the reference, its checkpoint loaded strictly
through ``create_model(checkpoint=...)``, eval logits compared on a random non-square input; then
the train-mode outputs (the head's logits -> ``loss_cls``; no auxiliary head).
"""
import pytest
import torch

import segzoo
from segzoo.zoo.sssegmentation import segzoo_name
from _ssseg import build_ssseg, rel_diff, ssseg_logits

CONFIGS = ["semanticfpn_resnet50os32_ade20k", "semanticfpn_resnet101os32_cityscapes"]


@pytest.mark.parametrize("config", CONFIGS)
def test_semanticfpn_parity(config, tmp_path):
    ref, cfg = build_ssseg(config)
    path = tmp_path / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    model = segzoo.create_model(segzoo_name(config)[0], checkpoint=path)
    assert type(model).__name__ == "SemanticFPN" and model.arch["decode_head"]["neck"]["type"] == "fpn"
    x = torch.randn(1, 3, 72, 104)
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape == (1, cfg["num_classes"], 18, 26)
    assert rel_diff(ours, theirs) <= 1e-4

    model.train()  # the FPN head's logits at the finest level (1/4) -> loss_cls
    out = model(torch.randn(2, 3, 64, 96))
    assert set(out) == {"logits", "aux_logits"} and out["aux_logits"] == []
    assert out["logits"].shape == (2, cfg["num_classes"], 16, 24)
