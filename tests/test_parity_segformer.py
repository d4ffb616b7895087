"""Parity of Segformer (MiT backbone + all-MLP head) with sssegmentation==1.7.0 and transformers 5.

Random weights (BatchNorm statistics included) in the reference, its checkpoint loaded strictly
through ``create_model(checkpoint=...)``, logits compared on a random non-square input. Depths
are shrunk on both sides to keep the run short. The first patch-embedding conv is scaled down in
every reference so that its LayerNorm input has a tiny variance: a wrong LayerNorm eps (1e-6 in
SSSegmentation, 1e-5 in transformers) then shows in the logits.
"""
import pytest
import torch

import segzoo
from _ssseg import build_ssseg, randomize_, rel_diff, ssseg_logits

X_SHAPE = (1, 3, 97, 131)


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """``randomize_`` plus random LayerNorm scales (initialised to 1, which would hide swapped norms)."""
    randomize_(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)


def _ssseg_name(config: str) -> str:
    names = [n for n in segzoo.list_models("segformer*")
             if segzoo.model_info(n)["source"].get("config") == config]
    assert len(names) == 1, names
    return names[0]


@pytest.mark.parametrize("config, depths", [("segformer_mitb0_ade20k", [1, 2, 1, 1]),
                                            ("segformer_mitb2_ade20k", [2, 1, 1, 1])])
def test_segformer_ssseg_parity(config, depths, tmp_path):
    ref, _ = build_ssseg(config, num_layers=depths, structure_type="custom")
    _randomize(ref)
    with torch.no_grad():
        ref.backbone_net.layers[0][0].projection.weight.mul_(1e-3)
        ref.backbone_net.layers[0][0].projection.bias.mul_(1e-3)
    path = tmp_path / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    model = segzoo.create_model(_ssseg_name(config), checkpoint=path, backbone={"depths": depths})
    x = torch.randn(*X_SHAPE)
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape
    assert rel_diff(ours, theirs) <= 1e-4


def _hf_segformer(name: str, depths):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation
    arch = segzoo.model_info(name)["arch"]
    bb = arch["backbone"]
    cfg = SegformerConfig(
        depths=depths, hidden_sizes=bb["embed_dims"], num_attention_heads=bb["num_heads"], sr_ratios=bb["sr_ratios"],
        patch_sizes=bb["patch_sizes"], strides=bb["strides"], mlp_ratios=[int(bb["mlp_ratio"])] * 4,
        decoder_hidden_size=arch["decode_head"]["channels"], num_labels=arch["num_classes"])
    torch.manual_seed(0)
    ref = SegformerForSemanticSegmentation(cfg)
    _randomize(ref)
    with torch.no_grad():
        ref.segformer.stages[0].patch_embeddings.proj.weight.mul_(1e-3)
        ref.segformer.stages[0].patch_embeddings.proj.bias.mul_(1e-3)
    return ref.eval()


@pytest.mark.parametrize("name, depths, layout", [("segformer_mit_b0_ade20k", [1, 2, 1, 1], "hub"),
                                                  ("segformer_mit_b2_cityscapes", [2, 1, 1, 1], "state_dict")])
def test_segformer_transformers_parity(name, depths, layout, tmp_path):
    """``hub``: save_pretrained's file (the Hub's key names); ``state_dict``: the installed names."""
    ref = _hf_segformer(name, depths)
    if layout == "hub":
        ref.save_pretrained(tmp_path)
        path = tmp_path / "model.safetensors"
    else:
        path = tmp_path / "ref.pth"
        torch.save(ref.state_dict(), path)
    model = segzoo.create_model(name, checkpoint=path, backbone={"depths": depths})
    x = torch.randn(*X_SHAPE)
    with torch.no_grad():
        ours = model(x)
        theirs = ref(pixel_values=x).logits
    assert ours.shape == theirs.shape
    assert rel_diff(ours, theirs) <= 1e-4


def test_mit_pretrained_from_local_file(tmp_path, monkeypatch):
    """ImageNet weights (SegformerForImageClassification, ``nvidia/mit-b0``): the classifier is
    dropped, the encoder loads strictly; features match the reference's stage outputs."""
    from transformers import SegformerConfig, SegformerForImageClassification
    from segzoo.models.backbones import mit as mit_mod

    cfg = SegformerConfig(depths=[2, 2, 2, 2], hidden_sizes=[32, 64, 160, 256], num_labels=1000)
    torch.manual_seed(0)
    ref = SegformerForImageClassification(cfg)
    _randomize(ref)
    ref.eval().save_pretrained(tmp_path)
    requested = []
    monkeypatch.setattr(mit_mod, "_download", lambda repo: requested.append(repo) or str(tmp_path / "model.safetensors"))
    model = segzoo.create_model("segformer_mit_b0_ade20k", pretrained_backbone=True)
    assert requested == ["nvidia/mit-b0"]
    x = torch.randn(1, 3, 67, 90)
    with torch.no_grad():
        ours = model.backbone(x)
        theirs = ref(pixel_values=x, output_hidden_states=True).hidden_states
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert rel_diff(a, b) <= 1e-4

    bad = {k: v for k, v in ref.state_dict().items() if "stages.3.layer_norm" not in k}
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in bad.items()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(RuntimeError, match="missing keys"):
        mit_mod.load_pretrained_file(model.backbone, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="no ImageNet weights"):
        mit_mod.mit([32, 64, 160, 256], [1, 2, 5, 8], [1, 1, 1, 1], [8, 4, 2, 1], pretrained=True)


def test_mit_backbone_variant_parity():
    """Not in the zoo but supported: qkv_bias=False (drops the output projection's bias too in
    SSSegmentation), a non-default patch size and mlp_ratio; backbone features compared."""
    from ssseg.modules.models.backbones.mit import MixVisionTransformer
    from segzoo.models.backbones import build_backbone
    from segzoo.models.backbones.mit import convert_sssegmentation
    ref = MixVisionTransformer("custom", embed_dims=16, num_layers=[1, 1, 1, 1], num_heads=[1, 2, 5, 8],
                               patch_sizes=[7, 3, 5, 3], mlp_ratio=2, qkv_bias=False, pretrained=False)
    _randomize(ref)
    ours = build_backbone({"type": "mit", "embed_dims": [16, 32, 80, 128], "num_heads": [1, 2, 5, 8],
                           "depths": [1, 1, 1, 1], "sr_ratios": [8, 4, 2, 1], "patch_sizes": [7, 3, 5, 3],
                           "mlp_ratio": 2, "qkv_bias": False})
    ours.load_state_dict(convert_sssegmentation(ref.state_dict()), strict=True)
    x = torch.randn(1, 3, 70, 45)
    with torch.no_grad():
        feats = ours.eval()(x)
        for a, b in zip(feats, ref.eval()(x)):
            assert a.shape == b.shape
            assert rel_diff(a, b) <= 1e-4
    assert ours.out_channels == [16, 32, 80, 128] and ours.reductions == [4, 8, 16, 32]
