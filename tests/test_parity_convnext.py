"""Parity of the ConvNeXt backbone (UPerNet) with sssegmentation==1.7.0 and transformers'
UperNetForSemanticSegmentation + ConvNextBackbone, and the timm ImageNet-weight converter.

Reference weights are random; the constant-initialised 1-D parameters (LayerNorm weights, layer
scale ``gamma``, which the configs initialise to 1 and the transformers default to 1e-6) are
randomised too so that a swapped or dropped one changes the logits.
"""
import pytest
import torch

import segzoo
from _ssseg import build_ssseg, randomize_, rel_diff, ssseg_logits

X_SHAPE = (1, 3, 100, 164)


def _randomize_constant_vectors_(model: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1 and p.numel() > 1 and torch.all(p == p.flatten()[0]):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)


def _segzoo_name_for_ssseg(config: str) -> str:
    names = [n for n in segzoo.list_models("upernet_convnext*")
             if segzoo.model_info(n)["source"].get("config") == config]
    assert len(names) == 1, names
    return names[0]


# tiny; base (ImageNet-22k variant) at full depth: ssseg's ConvNeXt takes only named archs
@pytest.mark.parametrize("config", ["upernet_convnexttiny_ade20k", "upernet_convnextbase21k_ade20k"])
def test_convnext_ssseg_parity(config, tmp_path):
    ref, _ = build_ssseg(config)
    _randomize_constant_vectors_(ref)
    path = tmp_path / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    model = segzoo.create_model(_segzoo_name_for_ssseg(config), checkpoint=path)
    x = torch.randn(*X_SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape
    assert rel_diff(ours, theirs) <= 1e-4


@pytest.mark.parametrize("name,depths", [("upernet_convnext_tiny_ade20k", None),
                                         ("upernet_convnext_large_ade20k", [1, 2, 3, 1])])
def test_convnext_transformers_parity(name, depths, tmp_path):
    from safetensors.torch import save_file
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation

    bb = segzoo.model_info(name)["arch"]["backbone"]
    depths = depths or bb["depths"]
    config = UperNetConfig(
        backbone_config=ConvNextConfig(depths=depths, hidden_sizes=bb["dims"], drop_path_rate=bb["drop_path_rate"],
                                       layer_scale_init_value=bb["layer_scale_init_value"],
                                       out_features=["stage1", "stage2", "stage3", "stage4"]),
        hidden_size=512, auxiliary_channels=256, num_labels=150, use_auxiliary_head=True)
    torch.manual_seed(0)
    ref = UperNetForSemanticSegmentation(config).eval()
    randomize_(ref)
    _randomize_constant_vectors_(ref)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = segzoo.create_model(name, checkpoint=path, backbone={"depths": depths})
    x = torch.randn(*X_SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.forward_upsampled(x)
        theirs = ref(pixel_values=x).logits
    assert ours.shape == theirs.shape == (1, 150, *X_SHAPE[2:])
    assert rel_diff(ours, theirs) <= 1e-4


def test_convnext_timm_weights_convert():
    """A timm ConvNeXt classifier state dict (the format of ``pretrained=True``) loads strictly and
    gives timm's stage outputs before the (freshly initialised) output norms."""
    import timm
    from segzoo.models.backbones import build_backbone
    from segzoo.models.backbones.convnext import convert_timm

    torch.manual_seed(0)
    ref = timm.create_model("convnext_tiny", pretrained=False, depths=(1, 1, 2, 1), ls_init_value=1.0).eval()
    _randomize_constant_vectors_(ref)
    ours = build_backbone({"type": "convnext", "depths": [1, 1, 2, 1], "dims": [96, 192, 384, 768],
                           "layer_scale_init_value": 1.0}).eval()
    ours.load_state_dict(convert_timm(ref.state_dict()), strict=True)
    x = torch.randn(1, 3, 72, 104)
    with torch.no_grad():
        feats = ours(x)
        stages = ref.forward_intermediates(x, intermediates_only=True)
    assert ours.out_channels == [96, 192, 384, 768] and ours.reductions == [4, 8, 16, 32]
    for f, s, norm in zip(feats, stages, ours.out_norms):
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
        ref_norm = torch.nn.functional.layer_norm(s.permute(0, 2, 3, 1), s.shape[1:2], eps=1e-6).permute(0, 3, 1, 2)
        assert rel_diff(f, ref_norm) <= 1e-5
    # the segmentor loads the same file as a backbone-only timm checkpoint
    model = segzoo.create_model("upernet_convnext_tiny_ade20k", checkpoint=ref.state_dict(),
                                backbone={"depths": [1, 1, 2, 1]})
    assert torch.equal(model.backbone.stages[2].blocks[1].gamma, ref.stages[2].blocks[1].gamma)


def test_convnext_pretrained_resolves_timm_weights(monkeypatch):
    """``pretrained=True`` asks timm for the ImageNet weights of the matching size (no network:
    timm is asked for the same architecture without weights)."""
    import timm
    from segzoo.models.backbones import build_backbone
    from segzoo.models.backbones import convnext as cx

    asked = []

    def fake_create_pretrained(name, **kwargs):
        asked.append((name, True))
        return timm.create_model(name.split(".")[0], pretrained=False, **kwargs)

    monkeypatch.setattr(cx, "create_timm_pretrained", fake_create_pretrained)
    bb = build_backbone({"type": "convnext", "depths": [3, 3, 9, 3], "dims": [96, 192, 384, 768]}, pretrained=True)
    assert asked == [("convnext_tiny.fb_in1k", True)] and bb.out_channels == [96, 192, 384, 768]
    with pytest.raises(ValueError, match="convnext_atto.d2_in1k.*depths=\\[2, 2, 6, 2\\]"):
        build_backbone({"type": "convnext", "depths": [3, 3, 9, 3], "dims": [96, 192, 384, 768],
                        "pretrained_tag": "convnext_atto.d2_in1k"}, pretrained=True)


def test_convnext_bad_config_errors():
    from segzoo.models.backbones import build_backbone
    with pytest.raises(ValueError, match="4 depths and 4 dims"):
        build_backbone({"type": "convnext", "depths": [3, 3, 9], "dims": [96, 192, 384]})
    with pytest.raises(ValueError, match="flavor"):
        build_backbone({"type": "convnext", "depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64], "flavor": "mmseg"})
    with pytest.raises(ValueError, match="pretrained_tag"):
        build_backbone({"type": "convnext", "depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]}, pretrained=True)
