"""Parity with sssegmentation==1.7.0: DANet on ResNet-V1c (ResNet-50 os16, ResNet-101 os8).

Random weights and calibrated BatchNorm statistics in the reference (both attention modules'
``gamma``, 0 at initialisation, set non-zero so that they reach the logits; the position
attention's queries and the channel attention's input scaled down so that their softmaxes are not
one-hot), its checkpoint loaded strictly through ``create_model(checkpoint=...)``, eval logits
compared on a random non-square input; then the train-mode outputs (the summed branches' logits,
the auxiliary head's, and each branch's own, which ``loss_cls_pam`` / ``loss_cls_cam`` supervise).
"""
import pytest
import torch

import segzoo
from _ssseg import build_ssseg, load_reference, randomize_, rel_diff, ssseg_logits

CONFIGS = ["danet_resnet50os16_voc", "danet_resnet101os8_ade20k"]


def _with_gamma(ref, seed: int = 1):
    """Set the attentions' ``gamma`` non-zero and soften their softmaxes, then measure BatchNorm
    statistics again."""
    with torch.no_grad():
        ref.pam_net.gamma.scale.fill_(0.8)
        ref.cam_net.gamma.scale.fill_(0.6)
        ref.pam_net.query_project.weight.mul_(0.003)
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(seed))
    randomize_(ref, seed, calibrate=lambda: ssseg_logits(ref, x))
    with torch.no_grad():  # the channel attention's softmax reads Gram matrices of its input
        bn = ref.cam_in_conv[1]
        bn.weight.mul_(0.01)
        bn.bias.mul_(0.01)
    return ref.eval()


@pytest.mark.parametrize("config", CONFIGS)
def test_danet_parity(config, tmp_path):
    ref, cfg = build_ssseg(config)
    ref = _with_gamma(ref)
    model = load_reference(ref, config, tmp_path)
    assert type(model).__name__ == "DANet" and model.arch["decode_head"]["type"] == "da"
    x = torch.randn(1, 3, 72, 104)
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape
    assert rel_diff(ours, theirs) <= 1e-4

    # train mode: every output the reference's four losses read, at head resolution
    model.train()
    out = model(torch.randn(2, 3, 64, 96))
    stride = model.backbone.reductions[-1]
    shape = (2, cfg["num_classes"], 64 // stride, 96 // stride)
    assert set(out) == {"logits", "aux_logits", "pam_logits", "cam_logits"} == set(model.LOSSES)
    assert set(model.LOSSES.values()) == set(cfg["losses"])
    assert len(out["aux_logits"]) == 1
    assert out["logits"].shape == out["aux_logits"][0].shape == out["pam_logits"].shape == out["cam_logits"].shape \
        == shape


def test_danet_new_classes(tmp_path):
    """num_classes= on a checkpoint re-initialises all three of the head's classifiers (and the
    auxiliary head's)."""
    name = "danet_resnet50_os8_voc"
    small = {"backbone": {"depth": 18}, "decode_head": {"channels": 32, "transform_channels": 8},
             "aux_heads": [dict(segzoo.model_info(name)["arch"]["aux_heads"][0], channels=16)]}
    path = tmp_path / "small.pth"
    torch.save(segzoo.create_model(name, **small).state_dict(), path)
    model = segzoo.create_model(name, checkpoint=path, num_classes=5, **small)
    head = model.decode_head
    assert head.classifier.out_channels == head.pam_classify.classifier.out_channels == \
        head.cam_classify.classifier.out_channels == model.aux_heads[0].classifier.out_channels == 5
    assert {"decode_head.pam_classify.classifier", "decode_head.cam_classify.classifier"} <= \
        set(model.provenance["new_classifier"]["layers"])
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 80)).shape == (1, 5, 8, 10)
    model.train()
    assert model(torch.randn(2, 3, 64, 80))["pam_logits"].shape == (2, 5, 8, 10)
