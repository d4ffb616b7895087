"""Parity with sssegmentation==1.7.0: ResNet-V1c segmentors (FCN, PSPNet, DeepLabV3, DeepLabV3+, UPerNet).

For one config per (segmentor, backbone variant): random weights and BatchNorm statistics in
the reference, its checkpoint loaded strictly through ``create_model(checkpoint=...)``, logits
compared on a random non-square input.
"""
import pytest
import torch

import segzoo
from segzoo.zoo.sssegmentation import segzoo_name
from _ssseg import build_ssseg, rel_diff, ssseg_logits

CONFIGS = [
    "fcn_resnet50os8_ade20k",
    "fcn_resnet101os16_cityscapes",
    "pspnet_resnet50os16_voc",
    "pspnet_resnet101os8_ade20k",
    "deeplabv3_resnet50os8_cityscapes",
    "deeplabv3_resnet101os16_ade20k",
    "deeplabv3plus_resnet50os8_voc",
    "deeplabv3plus_resnet101os16_cityscapes",
    "upernet_resnet50os16_ade20k",
    "upernet_resnet101os8_voc",
]


@pytest.mark.parametrize("config", CONFIGS)
def test_resnet_parity(config, tmp_path):
    ref, _ = build_ssseg(config)
    path = tmp_path / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    model = segzoo.create_model(segzoo_name(config)[0], checkpoint=path)
    x = torch.randn(1, 3, 72, 104)
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape
    assert rel_diff(ours, theirs) <= 1e-4


@pytest.mark.parametrize("output_stride", [8, 32])
def test_resnet18_dilated_parity(output_stride):
    """Depth 18 (BasicBlock) is not in the zoo but is a supported variant: compare backbones."""
    from ssseg.modules.models.backbones.resnet import ResNet
    from segzoo.models.backbones import build_backbone
    from segzoo.models.backbones.resnet import convert_sssegmentation
    from _ssseg import randomize_
    ref = ResNet(structure_type="resnet18conv3x3stem", depth=18, outstride=output_stride, pretrained=False,
                 norm_cfg={"type": "BatchNorm2d"})
    randomize_(ref)
    ours = build_backbone({"type": "resnet", "depth": 18, "output_stride": output_stride})
    ours.load_state_dict(convert_sssegmentation(ref.state_dict()), strict=True)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        for a, b in zip(ours.eval()(x), ref.eval()(x)):
            assert rel_diff(a, b) <= 1e-4
