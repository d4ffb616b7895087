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


# The published config.json of each nvidia/segformer-* repo, kept here so that the reference is not
# configured from segzoo's own record. Source: the script that wrote them, transformers'
# src/transformers/models/segformer/convert_segformer_original_to_pytorch.py (convert_segformer_checkpoint;
# read at huggingface/transformers@03fed90423ea807eff69fefad2452f0cd73b69a6; not shipped in the
# transformers wheel): per size (b0..b5) hidden_sizes, decoder_hidden_size and depths set on
# SegformerConfig(), num_labels 150 ("ade") or 19 ("city"), checkpoints segformer.b{0-4}.512x512.ade,
# segformer.b5.640x640.ade and segformer.b{0-5}.1024x1024.city; every other value is SegformerConfig's
# default, written out below (num_attention_heads [1, 2, 5, 8], sr_ratios [8, 4, 2, 1], patch_sizes
# [7, 3, 3, 3], strides [4, 2, 2, 2], mlp_ratios [4, 4, 4, 4], drop_path_rate 0.1).
_MIT_SIZES = {  # size -> (hidden_sizes, depths, decoder_hidden_size)
    "b0": ([32, 64, 160, 256], [2, 2, 2, 2], 256), "b1": ([64, 128, 320, 512], [2, 2, 2, 2], 256),
    "b2": ([64, 128, 320, 512], [3, 4, 6, 3], 768), "b3": ([64, 128, 320, 512], [3, 4, 18, 3], 768),
    "b4": ([64, 128, 320, 512], [3, 8, 27, 3], 768), "b5": ([64, 128, 320, 512], [3, 6, 40, 3], 768),
}
_SEGFORMER_COMMON = {"num_attention_heads": [1, 2, 5, 8], "sr_ratios": [8, 4, 2, 1], "patch_sizes": [7, 3, 3, 3],
                     "strides": [4, 2, 2, 2], "mlp_ratios": [4, 4, 4, 4], "drop_path_rate": 0.1}
HUB_CONFIGS = {
    f"nvidia/segformer-{size}-finetuned-{data}": dict(_SEGFORMER_COMMON, hidden_sizes=hidden, depths=depths,
                                                     decoder_hidden_size=decoder, num_labels=labels)
    for size, (hidden, depths, decoder) in _MIT_SIZES.items()
    for data, labels in ((f"ade-{640 if size == 'b5' else 512}-{640 if size == 'b5' else 512}", 150),
                         ("cityscapes-1024-1024", 19))
}


def _hub_record(repo: str) -> str:
    names = [n for n in segzoo.list_models("segformer*") if segzoo.model_info(n)["source"].get("repo_id") == repo]
    assert len(names) == 1, (repo, names)
    return names[0]


@pytest.mark.parametrize("repo", sorted(HUB_CONFIGS))
def test_segformer_hub_records_match_published_configs(repo):
    """The record of each Hub repo has the architecture of the repo's config.json."""
    pub, arch = HUB_CONFIGS[repo], segzoo.model_info(_hub_record(repo))["arch"]
    bb, head = arch["backbone"], arch["decode_head"]
    assert {k: bb[k] for k in ("embed_dims", "depths", "num_heads", "sr_ratios", "patch_sizes", "strides")} == {
        "embed_dims": pub["hidden_sizes"], "depths": pub["depths"], "num_heads": pub["num_attention_heads"],
        "sr_ratios": pub["sr_ratios"], "patch_sizes": pub["patch_sizes"], "strides": pub["strides"]}
    assert [bb["mlp_ratio"]] * 4 == pub["mlp_ratios"]
    assert (head["type"], head["in_index"], head["channels"]) == ("segformer", [0, 1, 2, 3], pub["decoder_hidden_size"])
    assert arch["aux_heads"] == [] and arch["num_classes"] == pub["num_labels"]


def _hf_segformer(repo: str, depths):
    """transformers' Segformer as the repo publishes it (HUB_CONFIGS), depths shrunk."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation
    pub = HUB_CONFIGS[repo]
    cfg = SegformerConfig(
        depths=depths, hidden_sizes=pub["hidden_sizes"], num_attention_heads=pub["num_attention_heads"],
        sr_ratios=pub["sr_ratios"], patch_sizes=pub["patch_sizes"], strides=pub["strides"],
        mlp_ratios=pub["mlp_ratios"], drop_path_rate=pub["drop_path_rate"],
        decoder_hidden_size=pub["decoder_hidden_size"], num_labels=pub["num_labels"])
    torch.manual_seed(0)
    ref = SegformerForSemanticSegmentation(cfg)
    _randomize(ref)
    with torch.no_grad():
        ref.segformer.stages[0].patch_embeddings.proj.weight.mul_(1e-3)
        ref.segformer.stages[0].patch_embeddings.proj.bias.mul_(1e-3)
    return ref.eval()


@pytest.mark.parametrize("repo, depths, layout", [("nvidia/segformer-b0-finetuned-ade-512-512", [1, 2, 1, 1], "hub"),
                                                  ("nvidia/segformer-b2-finetuned-cityscapes-1024-1024", [2, 1, 1, 1],
                                                   "state_dict")])
def test_segformer_transformers_parity(repo, depths, layout, tmp_path):
    """``hub``: save_pretrained's file (the Hub's key names); ``state_dict``: the installed names."""
    ref = _hf_segformer(repo, depths)
    if layout == "hub":
        ref.save_pretrained(tmp_path)
        path = tmp_path / "model.safetensors"
    else:
        path = tmp_path / "ref.pth"
        torch.save(ref.state_dict(), path)
    model = segzoo.create_model(_hub_record(repo), checkpoint=path, backbone={"depths": depths})
    x = torch.randn(*X_SHAPE)
    with torch.no_grad():
        ours = model(x)
        theirs = ref(pixel_values=x).logits
    assert ours.shape == theirs.shape
    assert rel_diff(ours, theirs) <= 1e-4


def test_mit_pretrained_backbone(hub_env, tmp_path, monkeypatch):
    """``pretrained_backbone=True``: the ImageNet weights of ``nvidia/mit-b0`` (transformers'
    SegformerForImageClassification) from the Hub (the emulator at HF_ENDPOINT; segzoo's download code
    unmocked); the classifier is dropped, the encoder loads strictly; features match the reference's
    stage outputs."""
    from transformers import SegformerConfig, SegformerForImageClassification
    from segzoo.models.backbones import mit as mit_mod

    cfg = SegformerConfig(depths=[2, 2, 2, 2], hidden_sizes=[32, 64, 160, 256], num_labels=1000)
    torch.manual_seed(0)
    ref = SegformerForImageClassification(cfg)
    _randomize(ref)
    ref.eval().save_pretrained(tmp_path)
    for name in ("config.json", "model.safetensors"):
        hub_env.add_repo_file("nvidia/mit-b0", name, (tmp_path / name).read_bytes())
    model = segzoo.create_model("segformer_mit_b0_ade20k", pretrained_backbone=True)
    assert hub_env.requests_to("/nvidia/mit-b0/resolve/main/model.safetensors")
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
    from segzoo._factory import load_imagenet
    from segzoo.errors import CheckpointMismatchError
    cfg = model.arch["backbone"]
    with monkeypatch.context() as m:  # the same load path, served a file that lacks a norm
        m.setattr(mit_mod, "imagenet_weights", lambda c: {"sources": [{"path": str(tmp_path / "bad.safetensors")}]})
        with pytest.raises(CheckpointMismatchError, match="missing keys"):
            load_imagenet(model.backbone, cfg)
    with pytest.raises(ValueError, match="no ImageNet weights"):
        mit_mod.imagenet_weights(dict(cfg, sr_ratios=[1, 1, 1, 1]))


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
