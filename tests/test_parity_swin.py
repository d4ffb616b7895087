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
import timm
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


def _hf_upernet(name: str, depths):
    from transformers import SwinConfig, UperNetConfig, UperNetForSemanticSegmentation
    arch = get_record(name).arch
    bb, aux = arch["backbone"], arch["aux_heads"][0]
    assert bb["flavor"] == "transformers"
    swin = SwinConfig(embed_dim=bb["embed_dim"], depths=depths, num_heads=bb["num_heads"], window_size=bb["window_size"],
                      mlp_ratio=bb["mlp_ratio"], qkv_bias=bb["qkv_bias"], patch_size=bb["patch_size"],
                      drop_path_rate=bb["drop_path_rate"], out_features=STAGES)
    cfg = UperNetConfig(backbone_config=swin, hidden_size=arch["decode_head"]["channels"],
                        pool_scales=arch["decode_head"]["pool_scales"], auxiliary_channels=aux["channels"],
                        auxiliary_num_convs=aux["num_convs"], num_labels=arch["num_classes"], use_auxiliary_head=True)
    torch.manual_seed(0)
    model = UperNetForSemanticSegmentation(cfg).eval()
    randomize_(model)
    _perturb_swin_(model)
    return model


HF_CASES = [  # (record, shrunk depths, input sizes, how the reference checkpoint is written)
    # window 7: stage 4 is 7x8 (min side == window) and 3x4 (smaller than the window)
    ("upernet_swin_tiny_ade20k", [1, 1, 1, 2], [(199, 230), (90, 123)], "state_dict"),
    # window 12: stage 4 is 6x8
    ("upernet_swin_base_ade20k", [2, 1, 1, 2], [(171, 229)], "save_pretrained"),
]


@pytest.mark.parametrize("name,depths,sizes,save", HF_CASES)
def test_swin_transformers_parity(name, depths, sizes, save, tmp_path):
    ref = _hf_upernet(name, depths)
    if save == "state_dict":  # the installed transformers' names (swin.*, q_proj, mlp.fc1)
        path = tmp_path / "ref.pth"
        torch.save(ref.state_dict(), path)
    else:  # the Hub files' names (attention.self.query, intermediate.dense)
        ref.save_pretrained(tmp_path / "ref")
        path = tmp_path / "ref" / "model.safetensors"
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


def test_swin_pretrained_backbone(monkeypatch):
    """``pretrained=True`` takes timm's weights by name (network replaced by a random timm model of the
    same architecture); window-7 tables are resized for a window-12 backbone."""
    from segzoo.models.backbones import build_backbone
    from segzoo.models.backbones import swin as sw
    asked = []

    def fake_create_pretrained(name, **kwargs):
        asked.append(name)
        return timm.create_model(name.split(".")[0], pretrained=False, depths=(1, 1, 1, 1))

    monkeypatch.setattr(sw, "create_timm_pretrained", fake_create_pretrained)
    cfg = {"type": "swin", "embed_dim": 96, "depths": [1, 1, 1, 1], "num_heads": [3, 6, 12, 24], "window_size": 12,
           "pretrained_tag": "swin_tiny_patch4_window7_224.ms_in1k"}
    net = build_backbone(cfg, pretrained=True)
    assert asked == ["swin_tiny_patch4_window7_224.ms_in1k"]
    assert net.layers[3].blocks[0].attn.relative_position_bias_table.shape == (23 * 23, 24)
    assert torch.equal(net.out_norms[2].weight, torch.ones(384))
    with pytest.raises(ValueError, match="pretrained_tag"):
        build_backbone(dict(cfg, embed_dim=128, num_heads=[4, 8, 16, 32]), pretrained=True)


def test_swin_errors():
    from segzoo.models.backbones import build_backbone
    cfg = {"type": "swin", "embed_dim": 32, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 4, 8], "window_size": 7}
    with pytest.raises(ValueError, match="flavor"):
        build_backbone(dict(cfg, flavor="mmseg"))
    with pytest.raises(ValueError, match="num_heads"):
        build_backbone(dict(cfg, num_heads=[3, 6, 12, 24]))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        build_backbone(cfg)(torch.randn(1, 4, 64, 64))
