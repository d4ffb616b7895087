"""Parity with sssegmentation==1.7.0: EMANet on ResNet-V1c (ResNet-50 os8, ResNet-101 os16).

Random weights and calibrated BatchNorm statistics in the reference, its checkpoint (the EM bases
buffer included) loaded strictly through ``create_model(checkpoint=...)``, eval logits compared on
a random non-square input. Eval mode must read the bases without moving them; one train-mode
pass must move them exactly as the reference's does (both in train mode on the same batch: the
BatchNorm layers then use the batch statistics in both, and dropout does not reach the bases).
"""
import pytest
import torch
import torch.nn.functional as F

from _ssseg import build_ssseg, load_reference, rel_diff, ssseg_logits

CONFIGS = ["emanet_resnet50os8_voc", "emanet_resnet101os16_cityscapes"]


@pytest.mark.parametrize("config", CONFIGS)
def test_emanet_parity(config, tmp_path):
    ref, cfg = build_ssseg(config)
    model = load_reference(ref, config, tmp_path)
    head = model.decode_head
    assert type(head).__name__ == "EMAHead" and model.arch["segmentor"] == "emanet"
    assert torch.equal(head.ema.bases, ref.ema_module.bases)  # the buffer comes from the checkpoint
    assert not any(p.requires_grad for p in head.mid_conv.parameters())
    bases = head.ema.bases.clone()

    # the logits mix the attention's reconstruction with the features it rebuilds and the backbone
    # map, which dominate them under random weights: compare the reconstruction itself too
    seen = {}
    head.ema.register_forward_hook(lambda m, i, o: seen.__setitem__("ours", o.clone()))
    ref.ema_module.register_forward_hook(lambda m, i, o: seen.__setitem__("theirs", o.clone()))
    x = torch.randn(1, 3, 72, 104)
    with torch.no_grad():
        ours = model(x)
        ours_again = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape and ours.shape[:2] == (1, cfg["num_classes"])
    assert rel_diff(ours, theirs) <= 1e-4
    assert rel_diff(seen["ours"], seen["theirs"]) <= 1e-4
    assert torch.equal(head.ema.bases, bases) and torch.equal(ours, ours_again)  # eval never moves the bases

    # the bases matter: other bases, another attention output
    with torch.no_grad():
        head.ema.bases.copy_(F.normalize(torch.randn_like(bases), dim=1))
        model(x)
        assert rel_diff(seen["ours"], seen["theirs"]) > 0.1
        head.ema.bases.copy_(bases)

    # train mode: one pass moves the bases as the reference's does
    x2 = torch.randn(2, 3, 64, 96)
    model.train()
    torch.nn.Module.train(ref, True)  # module train mode, the reference's forward still on its TEST path
    out = model(x2)
    ssseg_logits(ref, x2)
    assert not torch.equal(head.ema.bases, bases)
    assert rel_diff(head.ema.bases, ref.ema_module.bases) <= 1e-4
    stride = 8 if "os8" in config else 16
    shape = (2, cfg["num_classes"], 64 // stride, 96 // stride)
    assert set(out) == {"logits", "aux_logits"} and len(out["aux_logits"]) == 1
    assert out["logits"].shape == out["aux_logits"][0].shape == shape
    out["logits"].mean().backward()
    assert head.in_conv.conv.weight.grad is not None and head.mid_conv.weight.grad is None
