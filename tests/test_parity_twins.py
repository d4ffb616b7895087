"""Parity of the Twins backbones (PCPVT, SVT; UPerNet) with sssegmentation==1.7.0, the locally
grouped attention's padding and masking, and timm's ImageNet weights.

Reference weights are random (``build_ssseg``) and the constant-initialised 1-D parameters
(LayerNorm weights) are randomised too. Depths are shrunk identically on both sides (the
reference pins them to ``structure_type``; a custom name lifts the pin): every stage keeps its
first block (followed by the position encoding) and, for SVT, a locally grouped (even) and a
global (odd) block. The 100x164 input gives stage maps 25x41, 13x21, 7x11, 4x6, which need window
padding on both sides (masked), on one side only (unmasked in the reference) and on none, and
patch-embedding padding (13x21 -> 7x11 -> 4x6).
"""
import pytest
import torch

import segzoo
from _ssseg import build_ssseg, compare_logits, load_reference

X_SHAPE = (1, 3, 100, 164)


def _randomize_constant_vectors_(model: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1 and p.numel() > 1 and torch.all(p == p.flatten()[0]):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)


SSSEG_CASES = [  # (config, shrunk depths): pcpvt small (1024-channel head) / base; svt widths small / base / large
    ("upernet_pcpvtsmall_ade20k", [2, 1, 1, 1]),
    ("upernet_pcpvtbase_ade20k", [1, 2, 1, 2]),
    ("upernet_svtsmall_ade20k", [2, 2, 2, 2]),
    ("upernet_svtbase_ade20k", [2, 2, 3, 2]),
    ("upernet_svtlarge_ade20k", [2, 2, 2, 2]),
]


@pytest.mark.parametrize("config,depths", SSSEG_CASES)
def test_twins_ssseg_parity(config, depths, tmp_path):
    ref, _ = build_ssseg(config, depths=depths, structure_type="twins_shallow")
    _randomize_constant_vectors_(ref)
    model = load_reference(ref, config, tmp_path, backbone={"depths": depths})
    x = torch.randn(*X_SHAPE, generator=torch.Generator().manual_seed(0))
    compare_logits(model, ref, x, 150)
    if config == "upernet_svtsmall_ade20k":  # train mode: UPerNet logits at stride 4, the FCN auxiliary's at 16
        model.train()
        out = model(torch.randn(2, 3, 64, 96))
        assert set(out) == {"logits", "aux_logits"} and len(out["aux_logits"]) == 1
        assert out["logits"].shape == (2, 150, 16, 24) and out["aux_logits"][0].shape == (2, 150, 4, 6)
        # the reference's stochastic depth: twice on the global attention and the MLP, once on the local attention
        blocks = model.backbone.blocks[3]
        assert [len(blocks[1].drop_path1), len(blocks[1].drop_path2)] == [2, 2]
        assert isinstance(blocks[0].drop_path1, torch.nn.Module) and len(blocks[0].drop_path2) == 2
        assert not isinstance(blocks[0].drop_path1, torch.nn.Sequential)


def test_twins_records():
    """The six zoo configs are registered with the reference's structures (PCPVT: global attention,
    no output norms; SVT: 7x7 windows on the even blocks, output norms)."""
    names = {"pcpvt": ["small", "base", "large"], "svt": ["small", "base", "large"]}
    depths = {"pcpvt_small": [3, 4, 6, 3], "pcpvt_base": [3, 4, 18, 3], "pcpvt_large": [3, 8, 27, 3],
              "svt_small": [2, 2, 10, 4], "svt_base": [2, 2, 18, 2], "svt_large": [2, 2, 18, 2]}
    for kind, sizes in names.items():
        for size in sizes:
            info = segzoo.model_info(f"upernet_{kind}_{size}_ade20k")
            bb = info["arch"]["backbone"]
            assert info["source"] == {"project": "sssegmentation", "config": f"upernet_{kind}{size}_ade20k"}
            assert bb["type"] == "twins" and bb["depths"] == depths[f"{kind}_{size}"]
            assert (bb["window_sizes"] is not None) == bb["norm_after_stage"] == (kind == "svt")
            assert bb["sr_ratios"] == [8, 4, 2, 1] and bb["patch_sizes"] == [4, 2, 2, 2]


@pytest.mark.parametrize("size", [(14, 14), (16, 14), (14, 19), (9, 10), (3, 5)])
def test_locally_grouped_attention_matches_reference(size):
    """Against the reference's ``LocallyGroupedSelfAttention`` on maps that need no window padding,
    padding at the bottom only, at the right only, on both sides, and a map smaller than one window.
    Where both sides are padded, the mask matters: timm's unmasked attention differs there."""
    from ssseg.modules.models.backbones.twins import LocallyGroupedSelfAttention
    from timm.models.twins import LocallyGroupedAttn
    from segzoo.models.backbones.twins import LocallyGroupedAttention

    torch.manual_seed(0)
    ref = LocallyGroupedSelfAttention(32, num_heads=4, qkv_bias=True, window_size=7).eval()
    with torch.no_grad():
        ref.qkv.bias.normal_()  # padded tokens are zeros: their keys and values are the biases
    ours = LocallyGroupedAttention(32, 4, 7).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    h, w = size
    x = torch.randn(2, h * w, 32)
    with torch.no_grad():
        a, b = ours(x, size), ref(x, size)
    assert a.shape == b.shape == x.shape
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    unmasked = LocallyGroupedAttn(32, 4, ws=7).eval()
    unmasked.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        c = unmasked(x, size)
    assert torch.allclose(a, c, rtol=1e-5, atol=1e-5) == (h % 7 == 0 or w % 7 == 0)


@pytest.mark.parametrize("tag", ["twins_pcpvt_small", "twins_svt_small"])
def test_twins_timm_weights_convert(tag):
    """A timm Twins classifier (the format of ``pretrained=True``) loads strictly and, on an input
    that needs no padding and with timm's norms set to the reference's eps, gives timm's stage
    outputs: every stage's for PCPVT; for SVT the first stage's, normalised by the fresh output norm
    (the reference feeds each normalised stage output to the next stage, which timm does not)."""
    from functools import partial

    import timm
    from segzoo.models.backbones import build_backbone
    from segzoo.models.backbones.twins import adapt_imagenet, convert_timm

    torch.manual_seed(0)
    shallow = [2, 1, 1, 2]
    ref = timm.create_model(tag, pretrained=False, depths=shallow, norm_layer=partial(torch.nn.LayerNorm, eps=1e-5))
    ref.eval()
    _randomize_constant_vectors_(ref)
    cfg = dict(segzoo.model_info(f"upernet_{tag[len('twins_'):]}_ade20k")["arch"]["backbone"], depths=shallow)
    ours = build_backbone(cfg).eval()
    ours.load_state_dict(adapt_imagenet(convert_timm(ref.state_dict()), ours), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = ours(x)
        stages = ref.forward_intermediates(x, intermediates_only=True)
    if ours.out_norms is not None:  # SVT
        assert all(torch.all(n.weight == 1) and torch.all(n.bias == 0) for n in ours.out_norms)
        s = stages[0]
        stages = [torch.nn.functional.layer_norm(s.permute(0, 2, 3, 1), s.shape[1:2], eps=1e-5).permute(0, 3, 1, 2)]
    assert [f.shape[1] for f in feats] == ours.out_channels and ours.reductions == [4, 8, 16, 32]
    for i, (f, s) in enumerate(zip(feats, stages)):
        assert f.shape == s.shape and torch.allclose(f, s, rtol=1e-4, atol=1e-4), i


def test_twins_pretrained_backbone(hub_env, timm_on_hub):
    """``pretrained_backbone=True`` takes timm's ImageNet weights of the size by name from the Hub
    (the emulator): the classifier (``head``, final ``norm``) is dropped, SVT's output norms start fresh."""
    sd = timm_on_hub("twins_svt_small.in1k")
    model = segzoo.create_model("upernet_svt_small_ade20k", pretrained_backbone=True, decode_head={"channels": 32},
                                aux_heads=[])
    assert hub_env.requests_to("/timm/twins_svt_small.in1k/resolve/main/model.safetensors")
    ours = model.backbone.state_dict()
    used = {k for k in sd if not k.startswith(("head.", "norm."))}
    assert set(ours) == used | {f"out_norms.{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    assert all(torch.equal(ours[k], sd[k]) for k in used)
    assert all(torch.equal(n.weight, torch.ones_like(n.weight)) for n in model.backbone.out_norms)


def test_twins_unsupported_options():
    from segzoo.errors import UnsupportedConfig
    from segzoo.models.backbones.twins import from_ssseg_pcpvt, from_ssseg_svt

    base = {"type": "PCPVT", "structure_type": "pcpvt_small", "norm_cfg": {"type": "LayerNorm"}}
    assert from_ssseg_pcpvt(base)["depths"] == [3, 4, 6, 3]
    for bad in ({"drop_rate": 0.1}, {"norm_cfg": {"type": "LayerNorm", "eps": 1e-6}}, {"qkv_bias": False},
                {"strides": [4, 2, 2, 1]}, {"something": 1}):
        with pytest.raises(UnsupportedConfig):
            from_ssseg_pcpvt({**base, **bad})
    svt = from_ssseg_svt({"type": "SVT", "structure_type": "svt_x"})  # the class defaults: 3 stages
    assert svt["depths"] == [4, 4, 4] and svt["window_sizes"] == [7, 7, 7] and svt["sr_ratios"] == [8, 4, 2]
