"""Parity of the Swin backbone (UPerNet segmentors) with sssegmentation==1.7.0 and with transformers'
``UperNetForSemanticSegmentation`` + ``SwinBackbone``; timm ImageNet weights through ``convert_timm``.

Random weights everywhere (BatchNorm statistics, LayerNorms and relative position bias tables
included), the reference's checkpoint loaded strictly via ``create_model(checkpoint=...)``, logits
compared on non-square inputs that are not multiples of 32 nor of 32 * window (padding before
patch embedding, before patch merging and before the cyclic shift). Depths are shrunk identically
on both sides; every stage keeps a shifted block where it matters (the last stage, smaller than the
window on every input here).
"""
import pytest
import torch

import segzoo
from segzoo.registry import get_record
from _ssseg import build_ssseg, randomize_, rel_diff, ssseg_logits

STAGES = ["stage1", "stage2", "stage3", "stage4"]


def _perturb_swin_(model: torch.nn.Module, seed: int = 1) -> None:
    """What ``randomize_`` leaves at its initial value: LayerNorm weights (ones) and the relative
    position bias tables (zeros in both references)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.copy_(torch.randn(p.shape, generator=g))


def _ssseg_record_name(config: str) -> str:
    names = [n for n in segzoo.list_models("upernet_swin*")
             if get_record(n).source.get("project") == "sssegmentation" and get_record(n).source.get("config") == config]
    assert len(names) == 1, names
    return names[0]


SSSEG_CASES = [  # (config, shrunk depths, input size)
    ("upernet_swintiny_ade20k", [1, 2, 1, 2], (203, 178)),    # window 7
    ("upernet_swinbase_ade20k", [2, 1, 1, 2], (227, 166)),    # window 12
]


@pytest.mark.parametrize("config,depths,size", SSSEG_CASES)
def test_swin_ssseg_parity(config, depths, size, tmp_path):
    # structure_type names ImageNet weights and pins their depths; a custom name lifts the pin
    ref, _ = build_ssseg(config, depths=depths, structure_type="swin_shallow")
    _perturb_swin_(ref)
    path = tmp_path / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    model = segzoo.create_model(_ssseg_record_name(config), checkpoint=path, backbone={"depths": depths})
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape
    d = rel_diff(ours, theirs)
    print(f"{config} {tuple(x.shape)}: max rel diff {d:.2e}")
    assert d <= 1e-4


# The published config.json of each openmmlab/upernet-swin-* repo, kept here so that the reference is
# not configured from segzoo's own record. Source: the script that wrote them, transformers'
# src/transformers/models/upernet/convert_swin_upernet_to_pytorch.py (get_upernet_config; read at
# huggingface/transformers@09cb93d8890401636f6abd80b763671e755aa025; not shipped in the transformers wheel):
# SwinConfig(embed_dim, depths, num_heads, window_size, out_features=["stage1", .., "stage4"]) and
# UperNetConfig(auxiliary_in_channels, num_labels=150); every other value is the config classes'
# default at the time, written out below (SwinConfig: patch_size 4, mlp_ratio 4.0, qkv_bias True,
# drop_path_rate 0.1; UperNetConfig: hidden_size 512, pool_scales [1, 2, 3, 6], auxiliary_channels 256,
# auxiliary_num_convs 1, use_auxiliary_head True).
_SWIN_COMMON = {"patch_size": 4, "mlp_ratio": 4.0, "qkv_bias": True, "drop_path_rate": 0.1, "hidden_size": 512,
                "pool_scales": [1, 2, 3, 6], "auxiliary_channels": 256, "auxiliary_num_convs": 1, "num_labels": 150}
HUB_CONFIGS = {
    "openmmlab/upernet-swin-tiny": dict(_SWIN_COMMON, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                                        window_size=7, auxiliary_in_channels=384),
    "openmmlab/upernet-swin-small": dict(_SWIN_COMMON, embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24],
                                         window_size=7, auxiliary_in_channels=384),
    "openmmlab/upernet-swin-base": dict(_SWIN_COMMON, embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32],
                                        window_size=12, auxiliary_in_channels=512),
    "openmmlab/upernet-swin-large": dict(_SWIN_COMMON, embed_dim=192, depths=[2, 2, 18, 2],
                                         num_heads=[6, 12, 24, 48], window_size=12, auxiliary_in_channels=768),
}


def _hub_record(repo: str) -> str:
    names = [n for n in segzoo.list_models("upernet_swin*") if get_record(n).source.get("repo_id") == repo]
    assert len(names) == 1, (repo, names)
    return names[0]


@pytest.mark.parametrize("repo", sorted(HUB_CONFIGS))
def test_swin_hub_records_match_published_configs(repo):
    """The record of each Hub repo has the architecture of the repo's config.json. (drop_path_rate is
    not compared: the record keeps the training value of the mmseg config, inert at inference.)"""
    pub, arch = HUB_CONFIGS[repo], get_record(_hub_record(repo)).arch
    bb, head, (aux,) = arch["backbone"], arch["decode_head"], arch["aux_heads"]
    assert {k: bb[k] for k in ("embed_dim", "depths", "num_heads", "window_size", "patch_size", "mlp_ratio",
                               "qkv_bias")} == {k: pub[k] for k in ("embed_dim", "depths", "num_heads", "window_size",
                                                                     "patch_size", "mlp_ratio", "qkv_bias")}
    assert (head["type"], head["in_index"], head["channels"], head["pool_scales"]) == \
        ("uper", [0, 1, 2, 3], pub["hidden_size"], pub["pool_scales"])
    assert (aux["type"], aux["channels"], aux["num_convs"]) == ("fcn", pub["auxiliary_channels"],
                                                                 pub["auxiliary_num_convs"])
    assert bb["embed_dim"] * 2 ** aux["in_index"] == pub["auxiliary_in_channels"]  # the stage it reads
    assert arch["num_classes"] == pub["num_labels"]


def _hf_upernet(repo: str, depths):
    """transformers' UperNet + Swin as the repo publishes it (HUB_CONFIGS), depths shrunk."""
    from transformers import SwinConfig, UperNetConfig, UperNetForSemanticSegmentation
    pub = HUB_CONFIGS[repo]
    swin = SwinConfig(embed_dim=pub["embed_dim"], depths=depths, num_heads=pub["num_heads"],
                      window_size=pub["window_size"], mlp_ratio=pub["mlp_ratio"], qkv_bias=pub["qkv_bias"],
                      patch_size=pub["patch_size"], drop_path_rate=pub["drop_path_rate"], out_features=STAGES)
    cfg = UperNetConfig(backbone_config=swin, hidden_size=pub["hidden_size"], pool_scales=pub["pool_scales"],
                        auxiliary_in_channels=pub["auxiliary_in_channels"],
                        auxiliary_channels=pub["auxiliary_channels"], auxiliary_num_convs=pub["auxiliary_num_convs"],
                        num_labels=pub["num_labels"], use_auxiliary_head=True)
    torch.manual_seed(0)
    model = UperNetForSemanticSegmentation(cfg).eval()
    randomize_(model)
    _perturb_swin_(model)
    return model


HF_CASES = [  # (Hub repo, shrunk depths, input sizes, how the reference checkpoint is written)
    # window 7: stage 4 is 7x8 (min side == window) and 3x4 (smaller than the window)
    ("openmmlab/upernet-swin-tiny", [1, 1, 1, 2], [(199, 230), (90, 123)], "state_dict"),
    # window 12: stage 4 is 6x8
    ("openmmlab/upernet-swin-base", [2, 1, 1, 2], [(171, 229)], "save_pretrained"),
]


@pytest.mark.parametrize("repo,depths,sizes,save", HF_CASES)
def test_swin_transformers_parity(repo, depths, sizes, save, tmp_path):
    ref = _hf_upernet(repo, depths)
    if save == "state_dict":  # the installed transformers' names (swin.*, q_proj, mlp.fc1)
        path = tmp_path / "ref.pth"
        torch.save(ref.state_dict(), path)
    else:  # the Hub files' names (attention.self.query, intermediate.dense)
        ref.save_pretrained(tmp_path / "ref")
        path = tmp_path / "ref" / "model.safetensors"
    name = _hub_record(repo)
    model = segzoo.create_model(name, checkpoint=path, backbone={"depths": depths})
    g = torch.Generator().manual_seed(0)
    for size in sizes:
        x = torch.randn(1, 3, *size, generator=g)
        with torch.no_grad():
            ours = model.forward_upsampled(x)
            theirs = ref(pixel_values=x).logits
        assert ours.shape == theirs.shape
        d = rel_diff(ours, theirs)
        print(f"{name} {tuple(x.shape)}: max rel diff {d:.2e}")
        assert d <= 1e-4


def test_swin_timm_converter(tmp_path):
    """A timm SwinTransformer state dict loads strictly (as a backbone-only checkpoint) and gives
    timm's stage outputs, through the fresh output norms. The input is a multiple of 32 * window,
    where timm's shift-then-pad order and the references' pad-then-shift order agree."""
    from timm.models.swin_transformer import SwinTransformer
    kw = dict(embed_dim=32, depths=[1, 1, 2, 2], num_heads=[1, 2, 4, 8], window_size=7)
    ref = SwinTransformer(img_size=224, always_partition=True, strict_img_size=False, num_classes=10,
                          **kw).eval()
    _perturb_swin_(ref)
    path = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), path)
    model = segzoo.create_model("upernet_swin_tiny_ade20k", checkpoint=path, backbone=kw)
    x = torch.randn(1, 3, 224, 448, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.backbone(x)
        theirs = ref.forward_intermediates(x, intermediates_only=True, norm=False)
    for a, b in zip(ours, theirs):
        b = torch.nn.functional.layer_norm(b.permute(0, 2, 3, 1), b.shape[1:2]).permute(0, 3, 1, 2)
        assert a.shape == b.shape
        d = rel_diff(a, b)
        print(f"timm {tuple(a.shape)}: max rel diff {d:.2e}")
        assert d <= 1e-4


def test_swin_pretrained_backbone(hub_env, timm_on_hub):
    """``pretrained_backbone=True`` takes timm's ImageNet weights by name from the Hub (the emulator at
    HF_ENDPOINT; timm's and segzoo's download code unmocked): the classifier is dropped, the output
    norms start fresh, window-7 tables are resized for a window-12 backbone, and weights of another
    architecture are refused."""
    from segzoo.models.backbones import build_backbone
    tag = "swin_tiny_patch4_window7_224.ms_in1k"
    sd = timm_on_hub(tag)
    classifier = {"head.fc.weight", "head.fc.bias", "norm.weight", "norm.bias"}

    model = segzoo.create_model("upernet_swin_tiny_ade20k", pretrained_backbone=True, decode_head={"channels": 32})
    assert hub_env.requests_to(f"/timm/{tag}/resolve/main/model.safetensors")
    ours = model.backbone.state_dict()
    assert set(sd) - classifier <= set(ours)
    assert all(torch.equal(ours[k], sd[k]) for k in set(sd) - classifier)
    assert all(torch.equal(ours[f"out_norms.{i}.weight"], torch.ones(96 * 2 ** i)) for i in range(4))

    cfg = {"type": "swin", "embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 12,
           "pretrained_tag": tag}
    from segzoo._factory import load_imagenet
    from segzoo.errors import CheckpointMismatchError
    net = build_backbone(cfg)
    load_imagenet(net, cfg)  # the file comes from the Hugging Face cache now
    assert net.layers[3].blocks[0].attn.relative_position_bias_table.shape == (23 * 23, 24)
    assert torch.equal(net.layers[2].blocks[5].mlp.fc2.weight, sd["layers.2.blocks.5.mlp.fc2.weight"])
    assert torch.equal(net.out_norms[2].weight, torch.ones(384))
    with pytest.raises(CheckpointMismatchError, match=f"{tag}.*does not match"):
        load_imagenet(build_backbone(dict(cfg, depths=[2, 2, 2, 2])), dict(cfg, depths=[2, 2, 2, 2]))


def test_swin_errors():
    from segzoo.models.backbones import build_backbone
    cfg = {"type": "swin", "embed_dim": 32, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 4, 8], "window_size": 7}
    with pytest.raises(TypeError, match="unknown swin backbone option 'flavor'"):
        build_backbone(dict(cfg, flavor="transformers"))  # the references do not differ: no such option
    for name in segzoo.list_models("*swin*"):
        assert "flavor" not in get_record(name).arch["backbone"], name
    with pytest.raises(ValueError, match="num_heads"):
        build_backbone(dict(cfg, num_heads=[3, 6, 12, 24]))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        build_backbone(cfg)(torch.randn(1, 4, 64, 64))
