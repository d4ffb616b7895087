"""ConvNeXt V2 (UPerNet records without checkpoints): parity with sssegmentation==1.7.0, the
records' composition, and timm's ImageNet weights.

The reference has no ConvNeXt V2 config in its zoo; the test composes one as the records are
composed (segzoo/zoo/convnextv2.py): the zoo's ConvNeXt UPerNet config with its backbone replaced
by ``ConvNeXtV2(arch=<size>)`` and the reference's defaults. The reference's block calls its global
response norm without ``data_format`` on channels-last activations, which takes the norm's
channels-first branch and raises on every input of a full network; the parity test runs the
reference with the norm's own channels-last branch (``GRN.forward`` wrapped with
``data_format='channel_last'``), which is ConvNeXt V2's definition and what segzoo computes.
Reference weights are random; the global response norms' gamma / beta (zeros at initialisation)
and the LayerNorm weights are randomised so that a dropped or misplaced one changes the logits.
"""
import copy

import pytest
import torch

import segzoo
from _ssseg import randomize_, rel_diff, ssseg_config, ssseg_logits
from segzoo.zoo import convnextv2 as zoo_v2

X_SHAPE = (1, 3, 100, 164)
SIZES = list(zoo_v2.SIZES)


def _reference_config(size: str) -> dict:
    """The zoo's ConvNeXt UPerNet config with the reference's ConvNeXtV2 of ``size`` (its defaults)."""
    from ssseg.modules.models.backbones.convnextv2 import ConvNeXtV2
    dims = ConvNeXtV2.arch_settings[size]["dims"]
    cfg = ssseg_config(zoo_v2.HEAD_CONFIG)
    cfg["backbone"] = {"type": "ConvNeXtV2", "structure_type": f"convnextv2_{size}_1k_224_ema", "arch": size,
                       "pretrained": False, "selected_indices": [0, 1, 2, 3],
                       # the class default, written out: else the segmentor hands the backbone its BatchNorm
                       "norm_cfg": {"type": "LayerNormConvNeXtV2", "eps": 1e-6}}
    cfg["head"]["in_channels_list"] = list(dims)
    cfg["auxiliary"]["in_channels"] = dims[2]
    return cfg


@pytest.fixture
def channels_last_grn(monkeypatch):
    from ssseg.modules.models.backbones.bricks.normalization.grn import GRN
    forward = GRN.forward
    monkeypatch.setattr(GRN, "forward", lambda self, x, data_format="channel_last": forward(self, x, data_format))


def test_reference_grn_fails_on_its_own_layout():
    """Why the parity test wraps the reference's GRN: as shipped, the backbone raises."""
    from ssseg.modules.models.backbones.convnextv2 import ConvNeXtV2
    net = ConvNeXtV2("convnextv2_atto_1k_224_ema", arch="atto", pretrained=False,
                     norm_cfg={"type": "LayerNormConvNeXtV2", "eps": 1e-6}).eval()
    with pytest.raises(RuntimeError, match="must match the size"):
        net(torch.randn(1, 3, 64, 96))


@pytest.mark.parametrize("size", ["atto", "tiny"])
def test_convnextv2_ssseg_parity(size, channels_last_grn, tmp_path):
    from ssseg.modules.models.segmentors.builder import BuildSegmentor
    cfg = _reference_config(size)
    torch.manual_seed(0)
    ref = BuildSegmentor(segmentor_cfg=copy.deepcopy(cfg), mode="TEST").eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in ref.backbone_net.named_parameters():
            if p.ndim == 1 and (".grn." in name or torch.all(p == p.flatten()[0])):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    randomize_(ref, 0, calibrate=lambda: ssseg_logits(ref, torch.randn(2, 3, 96, 128, generator=g)))
    path = tmp_path / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    model = segzoo.create_model(f"upernet_convnextv2_{size}_ade20k", checkpoint=path)
    assert model.provenance["format"] == "sssegmentation"
    x = torch.randn(*X_SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape == (1, 150, 25, 41)  # the head's resolution (stride 4)
    assert rel_diff(ours, theirs) <= 1e-4
    if size == "atto":  # train mode: UPerNet logits at stride 4, the FCN auxiliary's at 16
        model.train()
        out = model(torch.randn(2, 3, 64, 96))
        assert set(out) == {"logits", "aux_logits"}
        assert out["logits"].shape == (2, 150, 16, 24) and out["aux_logits"][0].shape == (2, 150, 4, 6)


@pytest.mark.parametrize("size", SIZES)
def test_convnextv2_records_are_the_composed_reference(size):
    """Each record's network is the translation of the composed reference config; its test protocol
    and normalisation are the ConvNeXt UPerNet config's; it has no weights and says how it was made."""
    from ssseg.modules.models.backbones.convnextv2 import ConvNeXtV2
    from segzoo.convert.sssegmentation import arch_from_config
    from segzoo.models.backbones.convnextv2 import SIZES as BACKBONE_SIZES

    settings = ConvNeXtV2.arch_settings[size]
    assert zoo_v2.SIZES[size] == (settings["depths"], settings["dims"])
    assert BACKBONE_SIZES[size] == (tuple(settings["depths"]), tuple(settings["dims"]))
    info = segzoo.model_info(f"upernet_convnextv2_{size}_ade20k")
    assert info["arch"] == arch_from_config(_reference_config(size))
    head = segzoo.model_info(zoo_v2.HEAD_CONFIG)  # the ConvNeXt record of that config
    for key in ("inference", "normalization", "crop_size", "class_names", "dataset"):
        assert info[key] == head[key], key
    assert info["weights"] == [] and info["metrics"] == {}
    assert info["source"]["project"] == "segzoo" and zoo_v2.HEAD_CONFIG in str(info["source"]["composed_from"])
    assert info["backbone"] == f"convnextv2_{size}"
    assert segzoo.list_models(f"upernet_convnextv2_{size}_*", pretrained=True) == []


def test_convnextv2_timm_weights_convert():
    """A timm ConvNeXt V2 classifier (atto: 1x1-conv MLPs, reshaped) loads strictly and gives timm's
    stage outputs before the fresh output norms; the original release's layout loads too."""
    import timm
    from segzoo.models.backbones import build_backbone
    from segzoo.models.backbones.convnextv2 import convert_timm

    shallow = [1, 1, 2, 1]
    torch.manual_seed(0)
    ref = timm.create_model("convnextv2_atto", pretrained=False, depths=shallow).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ref.parameters():
            if p.ndim == 1:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    assert ref.state_dict()["stages.0.blocks.0.mlp.fc1.weight"].ndim == 4
    ours = build_backbone({"type": "convnextv2", "depths": shallow, "dims": [40, 80, 160, 320]}).eval()
    ours.load_state_dict(convert_timm(ref.state_dict()), strict=True)
    x = torch.randn(1, 3, 72, 104)
    with torch.no_grad():
        feats = ours(x)
        stages = ref.forward_intermediates(x, intermediates_only=True)
    assert ours.out_channels == [40, 80, 160, 320] and ours.reductions == [4, 8, 16, 32]
    for f, s, norm in zip(feats, stages, ours.out_norms):
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
        ref_norm = torch.nn.functional.layer_norm(s.permute(0, 2, 3, 1), s.shape[1:2], eps=1e-6).permute(0, 3, 1, 2)
        assert rel_diff(f, ref_norm) <= 1e-5

    # the original release (the reference's module names, GRN vectors as (1, 1, 1, C), a classifier)
    from ssseg.modules.models.backbones.convnextv2 import ConvNeXtV2
    orig = ConvNeXtV2("convnextv2_atto_1k_224_ema", arch="atto", pretrained=False,
                      norm_cfg={"type": "LayerNormConvNeXtV2", "eps": 1e-6}).state_dict()
    orig = {k: v.reshape(1, 1, 1, -1) if ".grn." in k else v for k, v in orig.items() if not k.startswith("norm")}
    orig.update({"norm.weight": torch.ones(320), "norm.bias": torch.zeros(320), "head.weight": torch.zeros(1000, 320),
                 "head.bias": torch.zeros(1000)})
    full = build_backbone({"type": "convnextv2", "depths": [2, 2, 6, 2], "dims": [40, 80, 160, 320]})
    full.load_state_dict(convert_timm({"model": orig}), strict=True)


def test_convnextv2_pretrained_backbone(hub_env, timm_on_hub):
    """``pretrained_backbone=True`` takes timm's ImageNet-1k weights of the size by name from the Hub
    (the emulator): the classifier is dropped, the output norms start fresh."""
    sd = timm_on_hub("convnextv2_atto.fcmae_ft_in1k")
    model = segzoo.create_model("upernet_convnextv2_atto_ade20k", pretrained_backbone=True,
                                decode_head={"channels": 32}, aux_heads=[])
    assert hub_env.requests_to("/timm/convnextv2_atto.fcmae_ft_in1k/resolve/main/model.safetensors")
    ours = model.backbone.state_dict()
    used = {k for k in sd if not k.startswith("head.")}
    assert set(ours) == used | {f"out_norms.{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    assert all(torch.equal(ours[k], sd[k].reshape(ours[k].shape)) for k in used)
    assert all(torch.equal(n.weight, torch.ones_like(n.weight)) for n in model.backbone.out_norms)


def test_convnextv2_unsupported_options():
    from segzoo.errors import UnsupportedConfig
    from segzoo.models.backbones.convnextv2 import from_ssseg, imagenet_weights

    base = {"type": "ConvNeXtV2", "arch": "nano", "norm_cfg": {"type": "LayerNormConvNeXtV2", "eps": 1e-6}}
    assert from_ssseg(base)["depths"] == [2, 2, 8, 2]
    for bad in ({"norm_cfg": {"type": "LayerNorm2d", "eps": 1e-6}}, {"act_cfg": {"type": "ReLU"}},
                {"arch": "xxl"}, {"out_indices": [3]}, {"layer_scale_init_value": 1.0}):
        with pytest.raises(UnsupportedConfig):
            from_ssseg({**base, **bad})
    with pytest.raises(UnsupportedConfig, match="norm_cfg"):
        from_ssseg({"type": "ConvNeXtV2", "arch": "nano"})
    assert imagenet_weights({"depths": [3, 3, 9, 3], "dims": [96, 192, 384, 768]}) == \
        {"timm": "convnextv2_tiny.fcmae_ft_in1k"}
    with pytest.raises(ValueError, match="pretrained_tag"):
        imagenet_weights({"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]})
