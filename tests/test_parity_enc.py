"""Parity with sssegmentation==1.7.0: ENCNet on ResNet-V1c (ResNet-50 os8, ResNet-101 os16).

Random weights and calibrated BatchNorm statistics in the reference, its checkpoint loaded
strictly through ``create_model(checkpoint=...)``, eval logits compared on a random non-square
input, and the SE-loss branch's logits (read from the reference's ``se_layer`` by a forward hook)
compared in eval and in train mode (both models in train mode on the same batch: the BatchNorm
layers then use the batch statistics in both, and dropout does not reach the SE branch).
"""
import pytest
import torch

import segzoo
from _ssseg import build_ssseg, compare_logits, load_reference, rel_diff, ssseg_logits

CONFIGS = ["encnet_resnet50os8_ade20k", "encnet_resnet101os16_voc"]


@pytest.mark.parametrize("config", CONFIGS)
def test_encnet_parity(config, tmp_path):
    ref, cfg = build_ssseg(config)
    model = load_reference(ref, config, tmp_path)
    assert type(model).__name__ == "EncNet" and model.arch["segmentor"] == "encnet"
    seen = {}
    model.decode_head.se_layer.register_forward_hook(lambda m, i, o: seen.__setitem__("ours", o))
    ref.se_layer.register_forward_hook(lambda m, i, o: seen.__setitem__("theirs", o))

    x = torch.randn(1, 3, 72, 104)
    compare_logits(model, ref, x, cfg["num_classes"])
    assert rel_diff(seen["ours"], seen["theirs"]) <= 1e-4

    # train mode: the SE branch's logits, named for loss_se, equal the reference's
    x2 = torch.randn(2, 3, 64, 96)
    model.train()
    torch.nn.Module.train(ref, True)  # module train mode, the reference's forward still on its TEST path
    out = model(x2)
    ssseg_logits(ref, x2)
    assert set(out) == {"logits", "aux_logits", "se_logits"} and len(out["aux_logits"]) == 1
    assert set(type(model).LOSSES) == set(out) and set(type(model).LOSSES.values()) == set(cfg["losses"])
    stride = 8 if "os8" in config else 16
    assert out["logits"].shape == out["aux_logits"][0].shape == (2, cfg["num_classes"], 64 // stride, 96 // stride)
    assert out["se_logits"].shape == (2, cfg["num_classes"])
    assert rel_diff(out["se_logits"].detach(), seen["theirs"]) <= 1e-4
    out["se_logits"].sum().backward()  # the SE loss trains the codebook
    assert model.decode_head.context_encoding.encoding.codewords.grad is not None


def test_encoding_blocks_match_the_reference_encoding():
    """The pixel blocks of the squared distances change nothing: a tiny input in 1 and in many blocks."""
    from ssseg.modules.models.segmentors.encnet import Encoding as RefEncoding
    from segzoo.models.heads.enc import Encoding
    torch.manual_seed(0)
    ref = RefEncoding(channels=16, num_codes=4)
    ours = Encoding(16, 4)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 16, 5, 7) * 3
    with torch.no_grad():
        expected = ref(x)
        assert rel_diff(ours(x), expected) <= 1e-5
        ours.block_elements = 2 * 4 * 16 * 3  # blocks of 3 pixels
        assert rel_diff(ours(x), expected) <= 1e-5


def test_enc_head_options():
    """Without the SE branch train mode returns no ``se_logits``; lateral inputs (no zoo config
    uses them) fuse other feature maps by index."""
    name = "encnet_resnet50_os8_ade20k"
    aux = dict(segzoo.model_info(name)["arch"]["aux_heads"][0], channels=8)
    small = {"backbone": {"depth": 18}, "aux_heads": [aux]}
    model = segzoo.create_model(name, num_classes=5, decode_head={"channels": 16, "use_se_loss": False}, **small)
    assert model.decode_head.se_layer is None
    model.train()
    assert set(model(torch.randn(2, 3, 64, 64))) == {"logits", "aux_logits"}
    from segzoo.models import build_model
    arch = dict(model.arch, decode_head=dict(model.arch["decode_head"], use_se_loss=True, lateral_index=[1, 2]))
    model = build_model(arch)
    model.train()
    out = model(torch.randn(2, 3, 64, 96))
    assert out["logits"].shape == (2, 5, 8, 12) and out["se_logits"].shape == (2, 5)
    assert model.decode_head.laterals[0].conv.in_channels == model.backbone.out_channels[1]
