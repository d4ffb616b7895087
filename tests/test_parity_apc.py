"""Parity with sssegmentation==1.7.0: APCNet on ResNet-V1c (ResNet-50 os8, ResNet-101 os16).

Random weights and calibrated BatchNorm statistics in the reference, its checkpoint loaded
strictly through ``create_model(checkpoint=...)``, eval logits compared on a random non-square
input, and each adaptive context module's output too (the backbone map, concatenated with them,
dominates the logits under random weights); then the train-mode outputs' keys and shapes.
"""
import pytest
import torch

from _ssseg import build_ssseg, check_train_outputs, compare_logits, hook_outputs, load_reference, rel_diff

CONFIGS = ["apcnet_resnet50os8_ade20k", "apcnet_resnet101os16_cityscapes"]


@pytest.mark.parametrize("config", CONFIGS)
def test_apcnet_parity(config, tmp_path):
    ref, cfg = build_ssseg(config)
    model = load_reference(ref, config, tmp_path)
    assert type(model.decode_head).__name__ == "APCHead" and model.arch["segmentor"] == "apcnet"
    assert len(model.decode_head.acms) == len(cfg["head"]["pool_scales"])
    seen = hook_outputs(zip(model.decode_head.acms, ref.acm_modules))

    x = torch.randn(1, 3, 72, 104)
    compare_logits(model, ref, x, cfg["num_classes"])
    for i in range(len(ref.acm_modules)):
        assert rel_diff(seen["ours", i], seen["theirs", i]) <= 1e-4, i

    check_train_outputs(model, cfg["num_classes"])
