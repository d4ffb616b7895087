"""Parity with sssegmentation==1.7.0: OCRNet on ResNet-V1c (ResNet-50 and ResNet-101, os8).

Random weights and calibrated BatchNorm statistics in the reference, its checkpoint loaded
strictly through ``create_model(checkpoint=...)``, eval logits compared on a random non-square
input; then the train-mode outputs (the OCR head's logits and the soft-region head's, which the
auxiliary loss needs).
"""
import pytest
import torch

import segzoo
from segzoo.zoo.sssegmentation import segzoo_name
from _ssseg import build_ssseg, rel_diff, ssseg_logits

CONFIGS = ["ocrnet_resnet50os8_ade20k", "ocrnet_resnet101os8_cityscapes"]


@pytest.mark.parametrize("config", CONFIGS)
def test_ocrnet_parity(config, tmp_path):
    ref, cfg = build_ssseg(config)
    path = tmp_path / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    name = segzoo_name(config)[0]
    model = segzoo.create_model(name, checkpoint=path)
    assert type(model).__name__ == "OCRNet" and model.arch["segmentor"] == "ocrnet"
    x = torch.randn(1, 3, 72, 104)
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape == (1, cfg["num_classes"], 9, 13)
    assert rel_diff(ours, theirs) <= 1e-4

    # train mode: the OCR head's logits and the soft regions, both at head resolution
    model.train()
    out = model(torch.randn(2, 3, 64, 96))
    assert set(out) == {"logits", "aux_logits"} and len(out["aux_logits"]) == 1
    assert out["logits"].shape == out["aux_logits"][0].shape == (2, cfg["num_classes"], 8, 12)
    out["logits"].mean().backward()  # the OCR loss reaches the soft-region head through the gather
    assert model.aux_heads[0].classifier.weight.grad is not None


def test_ocrnet_new_classes_and_inference_parameters():
    """num_classes= re-initialises both classifiers (the OCR head's and the soft-region head's),
    and the soft-region head counts as an inference parameter."""
    from segzoo.models import count_parameters
    model = segzoo.create_model("ocrnet_resnet50_os8_voc", num_classes=5, backbone={"depth": 18},
                                decode_head={"channels": 32, "transform_channels": 16}, aux_heads=[
                                    dict(segzoo.model_info("ocrnet_resnet50_os8_voc")["arch"]["aux_heads"][0],
                                         channels=16)])
    assert model.num_classes == 5 and model.aux_heads[0].classifier.out_channels == 5
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 80)).shape == (1, 5, 8, 10)
    assert count_parameters(model.arch) == sum(p.numel() for p in model.parameters())
