"""Parity with sssegmentation==1.7.0: ResNeSt-101 segmentors (FCN, PSPNet, DeepLabV3, DeepLabV3+, os8).

For one config per segmentor: random weights and calibrated BatchNorm statistics in the reference
(full ResNeSt-101 depth, nothing shrunk), its checkpoint loaded strictly through
``create_model(checkpoint=...)``, eval logits compared on a random non-square input, then the
train-mode outputs' keys and shapes. The backbone alone is compared on variants the zoo does not
use (ResNeSt-50, other stems, output strides 16 and 32). timm's ResNeSt-101e ImageNet classifier
(random weights) loads into the backbone as a "timm" checkpoint; the translator is checked on
every ResNeSt config of the reference.
"""
import json
import os

import pytest
import timm
import torch

import segzoo
from segzoo.convert.sssegmentation import arch_from_config
from segzoo.errors import UnsupportedConfig
from segzoo.models.backbones import build_backbone
from segzoo.models.backbones import resnest as resnest_mod
from segzoo.zoo.sssegmentation import segzoo_name
from _ssseg import build_ssseg, randomize_, rel_diff, ssseg_logits

CONFIGS = [
    "fcn_resnest101os8_ade20k",
    "pspnet_resnest101os8_cityscapes",
    "deeplabv3_resnest101os8_voc",
    "deeplabv3plus_resnest101os8_ade20k",
]
PORTED = {"FCN": "fcn", "PSPNet": "pspnet", "Deeplabv3": "deeplabv3", "Deeplabv3Plus": "deeplabv3plus"}
REFERENCE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "sssegmentation_zoo.json")


@pytest.mark.parametrize("config", CONFIGS)
def test_resnest_parity(config, tmp_path):
    ref, cfg = build_ssseg(config)
    path = tmp_path / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    model = segzoo.create_model(segzoo_name(config)[0], checkpoint=path)
    assert model.arch["backbone"]["type"] == "resnest"
    x = torch.randn(1, 3, 72, 104)
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    stride = 4 if cfg["type"] == "Deeplabv3Plus" else 8  # DeepLabV3+ decodes at the stride-4 features
    assert ours.shape == theirs.shape == (1, cfg["num_classes"], -(-72 // stride), -(-104 // stride))
    assert rel_diff(ours, theirs) <= 1e-4

    model.train()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert set(out) == {"logits", "aux_logits"} and len(out["aux_logits"]) == len(model.aux_heads) == 1
    assert out["logits"].shape == (2, cfg["num_classes"], 64 // stride, 96 // stride)
    assert out["aux_logits"][0].shape == (2, cfg["num_classes"], 8, 12)


@pytest.mark.parametrize("depth,stem_channels,output_stride", [(50, 64, 16), (50, 128, 32)])
def test_resnest_backbone_variants(depth, stem_channels, output_stride):
    """Supported variants outside the zoo: the backbone alone against the reference's."""
    from ssseg.modules.models.backbones.resnest import ResNeSt
    ref = ResNeSt(structure_type="resnest", depth=depth, stem_channels=stem_channels, outstride=output_stride,
                  pretrained=False, norm_cfg={"type": "BatchNorm2d"})
    randomize_(ref, calibrate=lambda: ref(torch.randn(2, 3, 64, 96)))
    ours = build_backbone({"type": "resnest", "depth": depth, "stem_channels": stem_channels,
                           "output_stride": output_stride})
    ours.load_state_dict(resnest_mod.convert_sssegmentation(ref.state_dict()), strict=True)
    assert ours.reductions == [4, 8, 16, 16 if output_stride == 16 else 32]
    x = torch.randn(1, 3, 67, 101)
    with torch.no_grad():
        outs, refs = ours.eval()(x), ref.eval()(x)
    assert len(outs) == len(refs) == 4
    for a, b in zip(outs, refs):
        assert a.shape == b.shape and rel_diff(a, b) <= 1e-4


def test_timm_classifier_checkpoint_loads_into_the_backbone(tmp_path):
    record = segzoo_name(CONFIGS[0])[0]
    name = resnest_mod.imagenet_weights(segzoo.model_info(record)["arch"]["backbone"])["timm"]
    assert name == "resnest101e.in1k" and timm.models.get_pretrained_cfg(name) is not None
    net = timm.create_model(name.split(".")[0], pretrained=False)
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.rand(v.shape, generator=g) + 0.5 if v.ndim == 1 else torch.randn(v.shape, generator=g))
          if v.is_floating_point() else v for k, v in net.state_dict().items()}
    path = tmp_path / "imagenet.pth"
    torch.save(sd, path)
    overrides = {"decode_head": {"channels": 16}, "aux_heads": []}
    model = segzoo.create_model(record, checkpoint=path, **overrides)
    assert model.provenance["format"] == "timm"
    ours = model.backbone.state_dict()
    assert set(ours) == set(sd) - {"fc.weight", "fc.bias"}
    for k, v in ours.items():
        assert torch.equal(v, sd[k]), k

    torch.save({**sd, "fc.scale": torch.zeros(3)}, path)  # only the classifier's own keys are dropped
    with pytest.raises(segzoo.CheckpointMismatchError, match=r"unused keys \(1\): fc.scale"):
        segzoo.create_model(record, checkpoint=path, **overrides)


def test_imagenet_weights():
    for depth, stem in [(50, 64), (101, 128), (200, 128)]:
        name = resnest_mod.imagenet_weights({"type": "resnest", "depth": depth, "stem_channels": stem})["timm"]
        assert timm.models.get_pretrained_cfg(name) is not None, name
    with pytest.raises(ValueError, match="no ImageNet weights"):
        resnest_mod.imagenet_weights({"type": "resnest", "depth": 50, "stem_channels": 128})


def test_translator_on_every_resnest_config():
    with open(REFERENCE) as f:
        zoo = json.load(f)
    configs = {k: v["config"] for k, v in zoo.items() if v["config"]["backbone"]["type"] == "ResNeSt"}
    built = []
    for name, cfg in sorted(configs.items()):
        if cfg["type"] in PORTED:
            arch = arch_from_config(cfg)
            assert arch["segmentor"] == PORTED[cfg["type"]]
            assert arch["backbone"] == {"type": "resnest", "depth": 101, "output_stride": 8, "stem_channels": 128}
            built.append(name)
        else:
            with pytest.raises(UnsupportedConfig, match=f"segmentor {cfg['type']} is not ported"):
                arch_from_config(cfg)
    assert len(built) == 12 and all("resnest101" in n for n in built)
    assert {n for n in segzoo.list_models() if "resnest" in n} == {segzoo_name(n)[0] for n in built}

    base = configs[CONFIGS[0]]
    for option, value in [("radix", 4), ("groups", 2), ("use_avg_for_downsample", False),
                          ("use_avg_after_block_conv2", False), ("contract_dilation", False)]:
        cfg = dict(base, backbone=dict(base["backbone"], **{option: value}))
        with pytest.raises(UnsupportedConfig, match=option):
            arch_from_config(cfg)


def test_resnest_pretrained_backbone_through_the_hub(hub_env, timm_on_hub):
    """pretrained_backbone=True: timm's ResNeSt-101e ImageNet weights come from the (emulated) Hub
    through segzoo's download path and fill the backbone only, every tensor the published one."""
    tag = "resnest101e.in1k"
    sd = timm_on_hub(tag)
    model = segzoo.create_model("fcn_resnest101_os8_voc", pretrained_backbone=True,
                                decode_head={"channels": 16}, aux_heads=[])
    assert hub_env.requests_to(f"/timm/{tag}/resolve/main/model.safetensors")
    ours = model.backbone.state_dict()
    assert set(ours) == {k for k in sd if not k.startswith("fc.")}
    assert all(torch.equal(ours[k], sd[k]) for k in ours)
    assert model.provenance["backbone_weights"] == f"timm {tag}"
