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


# The published config.json of each openmmlab/upernet-convnext-* repo, kept here so that the reference
# is not configured from segzoo's own record. Source: the script that wrote them, transformers'
# src/transformers/models/upernet/convert_convnext_upernet_to_pytorch.py (get_upernet_config; read at
# huggingface/transformers@bf3e4ce011acabda85d02da4ce215552730688fc; not shipped in the transformers
# wheel): ConvNextConfig(depths, hidden_sizes, out_features=["stage1", .., "stage4"]) and
# UperNetConfig(auxiliary_in_channels, num_labels=150); every other value is the config classes'
# default, written out below (ConvNextConfig: patch_size 4, layer_scale_init_value 1e-6,
# drop_path_rate 0.0; UperNetConfig: hidden_size 512, pool_scales [1, 2, 3, 6], auxiliary_channels 256,
# auxiliary_num_convs 1, use_auxiliary_head True).
_CONVNEXT_COMMON = {"patch_size": 4, "layer_scale_init_value": 1e-6, "drop_path_rate": 0.0, "hidden_size": 512,
                    "pool_scales": [1, 2, 3, 6], "auxiliary_channels": 256, "auxiliary_num_convs": 1,
                    "num_labels": 150}
HUB_CONFIGS = {
    "openmmlab/upernet-convnext-tiny": dict(_CONVNEXT_COMMON, depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768],
                                            auxiliary_in_channels=384),
    "openmmlab/upernet-convnext-small": dict(_CONVNEXT_COMMON, depths=[3, 3, 27, 3],
                                             hidden_sizes=[96, 192, 384, 768], auxiliary_in_channels=384),
    "openmmlab/upernet-convnext-base": dict(_CONVNEXT_COMMON, depths=[3, 3, 27, 3],
                                            hidden_sizes=[128, 256, 512, 1024], auxiliary_in_channels=512),
    "openmmlab/upernet-convnext-large": dict(_CONVNEXT_COMMON, depths=[3, 3, 27, 3],
                                             hidden_sizes=[192, 384, 768, 1536], auxiliary_in_channels=768),
    "openmmlab/upernet-convnext-xlarge": dict(_CONVNEXT_COMMON, depths=[3, 3, 27, 3],
                                              hidden_sizes=[256, 512, 1024, 2048], auxiliary_in_channels=1024),
}


def _hub_record(repo: str) -> str:
    names = [n for n in segzoo.list_models("upernet_convnext*")
             if segzoo.model_info(n)["source"].get("repo_id") == repo]
    assert len(names) == 1, (repo, names)
    return names[0]


@pytest.mark.parametrize("repo", sorted(HUB_CONFIGS))
def test_convnext_hub_records_match_published_configs(repo):
    """The record of each Hub repo has the architecture of the repo's config.json. layer_scale_init_value
    and drop_path_rate only initialise / regularise training (the record keeps the mmseg config's):
    what counts is that layer scale exists (a value > 0), so that its parameters load."""
    pub, arch = HUB_CONFIGS[repo], segzoo.model_info(_hub_record(repo))["arch"]
    bb, head, (aux,) = arch["backbone"], arch["decode_head"], arch["aux_heads"]
    assert (bb["depths"], bb["dims"]) == (pub["depths"], pub["hidden_sizes"])
    assert (bb["layer_scale_init_value"] > 0) == (pub["layer_scale_init_value"] > 0)
    assert (head["type"], head["in_index"], head["channels"], head["pool_scales"]) == \
        ("uper", [0, 1, 2, 3], pub["hidden_size"], pub["pool_scales"])
    assert (aux["type"], aux["channels"], aux["num_convs"]) == ("fcn", pub["auxiliary_channels"],
                                                                 pub["auxiliary_num_convs"])
    assert bb["dims"][aux["in_index"]] == pub["auxiliary_in_channels"]  # the stage it reads
    assert arch["num_classes"] == pub["num_labels"]


@pytest.mark.parametrize("repo,depths", [("openmmlab/upernet-convnext-tiny", None),
                                         ("openmmlab/upernet-convnext-large", [1, 2, 3, 1])])
def test_convnext_transformers_parity(repo, depths, tmp_path):
    from safetensors.torch import save_file
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation

    pub = HUB_CONFIGS[repo]
    depths = depths or pub["depths"]
    config = UperNetConfig(
        backbone_config=ConvNextConfig(depths=depths, hidden_sizes=pub["hidden_sizes"], patch_size=pub["patch_size"],
                                       drop_path_rate=pub["drop_path_rate"],
                                       layer_scale_init_value=pub["layer_scale_init_value"],
                                       out_features=["stage1", "stage2", "stage3", "stage4"]),
        hidden_size=pub["hidden_size"], pool_scales=pub["pool_scales"],
        auxiliary_in_channels=pub["auxiliary_in_channels"], auxiliary_channels=pub["auxiliary_channels"],
        auxiliary_num_convs=pub["auxiliary_num_convs"], num_labels=pub["num_labels"], use_auxiliary_head=True)
    torch.manual_seed(0)
    ref = UperNetForSemanticSegmentation(config).eval()
    randomize_(ref)
    _randomize_constant_vectors_(ref)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = segzoo.create_model(_hub_record(repo), checkpoint=path, backbone={"depths": depths})
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


def test_convnext_pretrained_backbone(hub_env, timm_on_hub):
    """``pretrained_backbone=True`` takes timm's ImageNet weights of the matching size by name from the
    Hub (the emulator at HF_ENDPOINT; timm's and segzoo's download code unmocked): the classifier is
    dropped, the output norms start fresh; weights of another size are refused."""
    from segzoo.models.backbones import build_backbone

    sd = timm_on_hub("convnext_tiny.fb_in1k")
    timm_on_hub("convnext_atto.d2_in1k")
    model = segzoo.create_model("upernet_convnext_tiny_ade20k", pretrained_backbone=True, decode_head={"channels": 32})
    assert hub_env.requests_to("/timm/convnext_tiny.fb_in1k/resolve/main/model.safetensors")
    ours = model.backbone.state_dict()
    classifier = {"head.norm.weight", "head.norm.bias", "head.fc.weight", "head.fc.bias"}
    assert set(ours) == set(sd) - classifier | {f"out_norms.{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    assert all(torch.equal(ours[k], sd[k]) for k in set(sd) - classifier)
    assert model.backbone.out_channels == [96, 192, 384, 768]
    assert all(torch.equal(n.weight, torch.ones_like(n.weight)) for n in model.backbone.out_norms)
    from segzoo._factory import load_imagenet
    from segzoo.errors import CheckpointMismatchError
    cfg = {"type": "convnext", "depths": [3, 3, 9, 3], "dims": [96, 192, 384, 768],
           "pretrained_tag": "convnext_atto.d2_in1k"}
    with pytest.raises(CheckpointMismatchError, match="convnext_atto.d2_in1k.*does not match"):
        load_imagenet(build_backbone(cfg), cfg)
    assert hub_env.requests_to("/timm/convnext_atto.d2_in1k/resolve/main/model.safetensors")


def test_convnext_bad_config_errors():
    from segzoo.models.backbones import build_backbone
    with pytest.raises(ValueError, match="4 depths and 4 dims"):
        build_backbone({"type": "convnext", "depths": [3, 3, 9], "dims": [96, 192, 384]})
    with pytest.raises(TypeError, match="unknown convnext backbone option 'flavor'"):  # the references do not differ
        build_backbone({"type": "convnext", "depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64], "flavor": "transformers"})
    for name in segzoo.list_models("*convnext*"):
        assert "flavor" not in segzoo.model_info(name)["arch"]["backbone"], name
    from segzoo.models.backbones.convnext import imagenet_weights
    with pytest.raises(ValueError, match="pretrained_tag"):
        imagenet_weights({"type": "convnext", "depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]})
