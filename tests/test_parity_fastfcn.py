"""Parity with sssegmentation==1.7.0: FastFCN (JPU neck) under its DeepLabV3, PSPNet and EncNet heads on
ResNet-V1c-50 (os32; the zoo has no ResNet-101 FastFCN).

Random weights and calibrated BatchNorm statistics in the reference, its checkpoint loaded strictly
through ``create_model(checkpoint=...)``, eval logits compared on a random non-square input; then
the train-mode outputs. The zoo data keeps the model keys of a config, not FastFCN's ``segmentor``
(the head under the JPU), so the reference gets it back from the config name.
"""
import pytest
import torch

import segzoo
from segzoo.zoo.sssegmentation import segzoo_name
from _ssseg import randomize_, rel_diff, ssseg_config, ssseg_logits

CONFIGS = {"fastfcn_deeplabv3_resnet50os32_cityscapes": "Deeplabv3", "fastfcn_pspnet_resnet50os32_cityscapes": "PSPNet",
           "fastfcn_encnet_resnet50os32_cityscapes": "ENCNet"}


def _build_reference(config: str, seed: int = 0):
    from ssseg.modules.models.segmentors.builder import BuildSegmentor
    cfg = ssseg_config(config)
    cfg["segmentor"] = CONFIGS[config]
    torch.manual_seed(seed)
    model = BuildSegmentor(segmentor_cfg=cfg, mode="TEST").eval()
    randomize_(model, seed, calibrate=lambda: ssseg_logits(model, torch.randn(
        2, 3, 96, 128, generator=torch.Generator().manual_seed(seed))))
    return model.eval(), cfg


@pytest.mark.parametrize("config", list(CONFIGS))
def test_fastfcn_parity(config, tmp_path):
    ref, cfg = _build_reference(config)
    path = tmp_path / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    model = segzoo.create_model(segzoo_name(config)[0], checkpoint=path)
    assert type(model).__name__ == "FastFCN" and model.arch["decode_head"]["neck"]["type"] == "jpu"
    x = torch.randn(1, 3, 72, 104)
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape == (1, cfg["num_classes"], 9, 13)  # the JPU's output: 1/8
    assert rel_diff(ours, theirs) <= 1e-4

    # train mode: head logits -> loss_cls, the FCN head on the 1/16 level the JPU passes through -> loss_aux,
    # EncNet's image-level class presence -> loss_se
    model.train()
    out = model(torch.randn(2, 3, 64, 96))
    se = CONFIGS[config] == "ENCNet"
    assert set(out) == {"logits", "aux_logits"} | ({"se_logits"} if se else set())
    assert set(model.LOSSES[k] for k in out) == set(cfg["losses"])
    assert out["logits"].shape == (2, cfg["num_classes"], 8, 12)
    assert [a.shape for a in out["aux_logits"]] == [(2, cfg["num_classes"], 4, 6)]
    if se:
        assert out["se_logits"].shape == (2, cfg["num_classes"])
