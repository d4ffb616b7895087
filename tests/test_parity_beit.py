"""Parity of the BEiT / MAE backbone (with its feature-to-pyramid neck, UPerNet segmentors) with
sssegmentation==1.7.0 (``BEiT``, ``MAE``, ``Feature2Pyramid``) and with transformers'
``BeitForSemanticSegmentation``.

Random weights everywhere: BatchNorm statistics, LayerNorms, layer scales, class token, position
embedding and relative position bias tables included. SSSegmentation runs only inputs of its
``img_size`` (the bias tables and MAE's position embedding are made for that grid), so its models
are built with a small non-square ``img_size`` and compared on inputs of that size (non-square
window, tables used as they are). transformers runs any input: its models keep the published
``image_size`` 640 and are compared on small inputs, where the tables are resized at every forward.
Depths are shrunk identically on both sides.

The SSSegmentation configs carry their neck in ``head.feature2pyramid`` and transformers' BEiT keeps
its encoder under ``beit.``: the tests that go through ``create_model`` need segzoo's dispatchers
to hand both to the backbone family (``feature2pyramid_from_ssseg``, ``split_transformers``), and are
skipped, saying so, until they do.
"""
import pytest
import torch

import segzoo
from segzoo.convert.checkpoint import load_state_dict_strict
from segzoo.models import build_model
from segzoo.models.backbones import beit as B
from segzoo.models.foreign import TRANSFORMERS_SEGMENTORS
from segzoo.registry import get_record
from segzoo.zoo import load_data
from segzoo.zoo.hub_beit import transformers_out_indices
from _ssseg import build_ssseg, compare_logits, load_reference, randomize_, rel_diff

SSSEG_REGISTERED = "upernet_beitbase_ade20k" in load_data("sssegmentation")


def _hub_wired() -> bool:
    """Whether a BeitForSemanticSegmentation checkpoint reaches the BEiT family's converter."""
    arch = get_record("upernet_beit_base_ade20k").arch
    _, rest = TRANSFORMERS_SEGMENTORS["upernet"]({"beit.embeddings.cls_token": torch.zeros(1, 1, 768)}, arch)
    return not rest


def _perturb_(model: torch.nn.Module, seed: int = 1) -> None:
    """What ``randomize_`` leaves at its initial value: LayerNorm weights (ones), layer scales
    (constant), class token, position embedding and relative position bias tables (zeros)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        for name, p in model.named_parameters():
            if name.endswith(("relative_position_bias_table", "cls_token", "pos_embed", "position_embeddings")):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith(("gamma_1", "gamma_2", "lambda_1", "lambda_2")):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)


# ---- SSSegmentation ------------------------------------------------------------------------------------
SSSEG_CASES = [  # (config, backbone overrides of the reference)
    ("upernet_beitbase_ade20k", {}),
    # structure_type names ImageNet weights and pins the depth; a custom name lifts the pin
    ("upernet_beitlarge_ade20k", {"structure_type": "beit_shallow"}),
    ("upernet_maevitbase_ade20k", {}),
]
SIZE, DEPTH, OUTS = (96, 128), 6, [1, 2, 4, 5]


@pytest.mark.skipif(not SSSEG_REGISTERED, reason="the SSSegmentation BEiT/MAE configs are not registered: the "
                    "dispatcher does not yet hand head.feature2pyramid to the backbone family")
@pytest.mark.parametrize("config,extra", SSSEG_CASES)
def test_beit_ssseg_parity(config, extra, tmp_path):
    ref, cfg = build_ssseg(config, img_size=SIZE, num_layers=DEPTH, out_indices=OUTS, **extra)
    _perturb_(ref)
    model = load_reference(ref, config, tmp_path, backbone={"img_size": list(SIZE), "depth": DEPTH,
                                                            "out_indices": OUTS})
    assert model.arch["backbone"]["neck"] == [4, 2, 1, 0.5]
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    ours, theirs = compare_logits(model, ref, x, 150)
    assert theirs.std() > 0.1 * theirs.abs().max()  # the logits carry a signal
    # the auxiliary head reads the neck's third level, as SSSegmentation's does
    with torch.no_grad():
        feats = ref.feats_to_pyramid_net(ref.transforminputs(ref.backbone_net(x), cfg["backbone"]["selected_indices"]))
        aux_theirs = ref.auxiliary_decoder(feats[-2])
        aux_ours = model.aux_heads[0](model.backbone(x))
    assert rel_diff(aux_ours, aux_theirs) <= 1e-4
    model.train()
    out = model(torch.randn(2, 3, *SIZE))
    assert set(out) == {"logits", "aux_logits"} and len(out["aux_logits"]) == 1
    assert out["logits"].shape == (2, 150, SIZE[0] // 4, SIZE[1] // 4)
    assert out["aux_logits"][0].shape == (2, 150, SIZE[0] // 16, SIZE[1] // 16)


@pytest.mark.skipif(not SSSEG_REGISTERED, reason="the SSSegmentation BEiT/MAE configs are not registered")
def test_beit_ssseg_records():
    """The three configs are registered with the backbone the references build (class defaults filled in)."""
    base = get_record("upernet_beitbase_ade20k").arch["backbone"]
    large = get_record("upernet_beitlarge_ade20k").arch["backbone"]
    mae = get_record("upernet_maevitbase_ade20k").arch["backbone"]
    assert (base["img_size"], base["depth"], base["out_indices"], base["qkv_bias"], base["init_values"]) == \
        ([640, 640], 12, [3, 5, 7, 11], "qv", 0.1)
    assert (large["embed_dim"], large["depth"], large["out_indices"], large["init_values"]) == \
        (1024, 24, [7, 11, 15, 23], 1e-6)
    assert (mae["img_size"], mae["qkv_bias"], mae["abs_pos_embed"], mae["init_values"]) == ([512, 512], True, True, 1.0)
    assert all(bb["neck"] == [4, 2, 1, 0.5] and bb["layer_norm_eps"] == 1e-6 for bb in (base, large, mae))


# ---- transformers -------------------------------------------------------------------------------------
# Each repo's config.json, as transformers' convert_beit_unilm_to_pytorch.py wrote it (use_relative_position_bias
# True, image_size 640, 150 labels; large: hidden 1024, intermediate 4096, 24 layers, 16 heads, out_indices
# [7, 11, 15, 23]), every other value BeitConfig's default (written out); see segzoo/zoo/hub_beit.py.
_HUB_COMMON = {"patch_size": 16, "image_size": 640, "layer_norm_eps": 1e-12, "layer_scale_init_value": 0.1,
               "use_relative_position_bias": True, "use_shared_relative_position_bias": False,
               "use_absolute_position_embeddings": False, "use_mean_pooling": True, "hidden_act": "gelu",
               "pool_scales": [1, 2, 3, 6], "use_auxiliary_head": True, "auxiliary_channels": 256,
               "auxiliary_num_convs": 1, "auxiliary_concat_input": False, "drop_path_rate": 0.1, "num_labels": 150}
HUB_CONFIGS = {
    "microsoft/beit-base-finetuned-ade-640-640": dict(_HUB_COMMON, hidden_size=768, intermediate_size=3072,
                                                       num_hidden_layers=12, num_attention_heads=12,
                                                       out_indices=[3, 5, 7, 11]),
    "microsoft/beit-large-finetuned-ade-640-640": dict(_HUB_COMMON, hidden_size=1024, intermediate_size=4096,
                                                        num_hidden_layers=24, num_attention_heads=16,
                                                        out_indices=[7, 11, 15, 23]),
}


def _hub_name(repo: str) -> str:
    names = [n for n in segzoo.list_models("upernet_beit*") if get_record(n).source.get("repo_id") == repo]
    assert len(names) == 1, (repo, names)
    return names[0]


@pytest.mark.parametrize("repo", sorted(HUB_CONFIGS))
def test_beit_hub_records_match_published_configs(repo):
    pub, arch = HUB_CONFIGS[repo], get_record(_hub_name(repo)).arch
    bb, head, (aux,) = arch["backbone"], arch["decode_head"], arch["aux_heads"]
    assert bb["img_size"] == [pub["image_size"]] * 2 and bb["patch_size"] == pub["patch_size"]
    assert (bb["embed_dim"], bb["depth"], bb["num_heads"], bb["mlp_ratio"] * bb["embed_dim"]) == \
        (pub["hidden_size"], pub["num_hidden_layers"], pub["num_attention_heads"], pub["intermediate_size"])
    assert bb["out_indices"] == transformers_out_indices(pub["out_indices"])
    assert (bb["layer_norm_eps"], bb["qkv_bias"], bb["abs_pos_embed"], bb["neck"]) == \
        (pub["layer_norm_eps"], "qv", False, [4, 2, 1, 0.5])
    assert (head["type"], head["in_index"], head["channels"], head["pool_scales"]) == \
        ("uper", [0, 1, 2, 3], pub["hidden_size"], pub["pool_scales"])
    assert (aux["type"], aux["in_index"], aux["channels"], aux["num_convs"]) == \
        ("fcn", 2, pub["auxiliary_channels"], pub["auxiliary_num_convs"])
    assert arch["num_classes"] == pub["num_labels"]


HUB_CASES = [  # (repo, shrunk depth, config out_indices for that depth, input size)
    ("microsoft/beit-base-finetuned-ade-640-640", 11, [3, 5, 7, 11], (80, 112)),  # the published out_indices
    ("microsoft/beit-large-finetuned-ade-640-640", 5, [2, 3, 4, 5], (96, 64)),
]


def _hf_beit(repo: str, depth: int, out_indices):
    from transformers import BeitConfig, BeitForSemanticSegmentation
    pub = dict(HUB_CONFIGS[repo], num_hidden_layers=depth, out_indices=out_indices)
    torch.manual_seed(0)
    ref = BeitForSemanticSegmentation(BeitConfig(**pub)).eval()
    _perturb_(ref)
    randomize_(ref, 0, calibrate=lambda: ref(pixel_values=torch.randn(2, 3, 96, 128)))
    return ref


def _arch_for(repo: str, depth: int, out_indices) -> dict:
    arch = dict(get_record(_hub_name(repo)).arch)
    arch["backbone"] = dict(arch["backbone"], depth=depth, out_indices=transformers_out_indices(out_indices))
    return arch


@pytest.mark.parametrize("repo,depth,outs,size", HUB_CASES)
def test_beit_transformers_parity(repo, depth, outs, size, tmp_path):
    """The BEiT family's conversion of a BeitForSemanticSegmentation state dict (the installed
    transformers' names), loaded strictly; then, where the transformers dispatcher hands BEiT
    checkpoints to it, the same through ``create_model(checkpoint=...)``."""
    ref = _hf_beit(repo, depth, outs)
    arch = _arch_for(repo, depth, outs)
    backbone, rest = B.split_transformers(ref.state_dict(), arch)
    model = build_model(arch).eval()
    load_state_dict_strict(model, {**{f"backbone.{k}": v for k, v in B.convert_transformers(backbone).items()}, **rest})
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(x), ref(pixel_values=x).logits
        aux_theirs = ref.auxiliary_head(ref.fpn(tuple(
            h[:, 1:].transpose(1, 2).reshape(1, -1, size[0] // 16, size[1] // 16)
            for h in (ref.beit(x, output_hidden_states=True).hidden_states[i - 1] for i in outs))))
        aux_ours = model.aux_heads[0](model.backbone(x))
    assert ours.shape == theirs.shape == (1, 150, size[0] // 4, size[1] // 4)
    assert theirs.std() > 0.1 * theirs.abs().max()
    assert rel_diff(ours, theirs) <= 1e-4 and rel_diff(aux_ours, aux_theirs) <= 1e-4
    if _hub_wired():
        path = tmp_path / "model.safetensors"
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
        loaded = segzoo.create_model(_hub_name(repo), checkpoint=path,
                                     backbone={"depth": depth, "out_indices": arch["backbone"]["out_indices"]})
        with torch.no_grad():
            assert rel_diff(loaded(x), theirs) <= 1e-4


def test_beit_transformers_hub_file_names():
    """The Hub files' (transformers 4) names map onto the installed transformers' ones: fpn1.0/1/3 and
    fpn2.0, attention.attention.query/key/value, the per-layer bias table, mmseg-style head keys."""
    old = {"beit.embeddings.cls_token": 0, "beit.embeddings.patch_embeddings.projection.weight": 1,
           "beit.encoder.layer.0.attention.attention.query.weight": 2,
           "beit.encoder.layer.0.attention.attention.query.bias": 3,
           "beit.encoder.layer.0.attention.attention.key.weight": 4,
           "beit.encoder.layer.0.attention.attention.value.weight": 5,
           "beit.encoder.layer.0.attention.attention.value.bias": 6,
           "beit.encoder.layer.0.attention.attention.relative_position_bias.relative_position_bias_table": 7,
           "beit.encoder.layer.0.attention.attention.relative_position_bias.relative_position_index": 8,
           "beit.encoder.layer.0.attention.output.dense.weight": 9, "beit.encoder.layer.0.intermediate.dense.bias": 10,
           "beit.encoder.layer.0.output.dense.weight": 11, "beit.encoder.layer.0.layernorm_before.weight": 12,
           "beit.encoder.layer.0.lambda_1": 13, "fpn1.0.weight": 14, "fpn1.1.running_var": 15, "fpn1.3.bias": 16,
           "fpn2.0.weight": 17, "decode_head.psp_modules.2.1.conv.weight": 18, "decode_head.bottleneck.bn.bias": 19,
           "decode_head.fpn_bottleneck.conv.weight": 20, "auxiliary_head.convs.0.bn.weight": 21,
           "decode_head.classifier.weight": 22}
    sd = {k: torch.full((1,), float(v)) for k, v in old.items()}
    backbone, rest = B.split_transformers(sd, {})
    converted = B.convert_transformers(backbone)
    assert converted.pop("blocks.0.attn.qkv.weight").tolist() == [2.0, 4.0, 5.0]  # query, key, value rows
    out = {k: int(v[0]) for k, v in {**converted, **rest}.items()}
    assert out == {"cls_token": 0, "patch_embed.proj.weight": 1, "blocks.0.attn.q_bias": 3, "blocks.0.attn.v_bias": 6,
                   "blocks.0.attn.relative_position_bias_table": 7, "blocks.0.attn.proj.weight": 9,
                   "blocks.0.mlp.fc1.bias": 10, "blocks.0.mlp.fc2.weight": 11, "blocks.0.norm1.weight": 12,
                   "blocks.0.gamma_1": 13, "neck.0.0.weight": 14, "neck.0.1.running_var": 15, "neck.0.3.bias": 16,
                   "neck.1.0.weight": 17, "decode_head.ppm.stages.2.conv.weight": 18,
                   "decode_head.ppm.bottleneck.bn.bias": 19, "decode_head.fpn_bottleneck.conv.weight": 20,
                   "aux_heads.0.convs.0.bn.weight": 21, "decode_head.classifier.weight": 22}


# ---- pieces ---------------------------------------------------------------------------------------------
def test_rel_pos_index_matches_definition():
    """The bias index of a 2 x 3 grid plus class token, written out: pairs of tokens by their offset
    ((dh + 1) * 5 + (dw + 2)), then class-to-token 15, token-to-class 16, class-to-class 17."""
    idx = B._rel_pos_index(2, 3)
    coords = [(h, w) for h in range(2) for w in range(3)]
    for i, (hi, wi) in enumerate(coords):
        for j, (hj, wj) in enumerate(coords):
            assert idx[i + 1, j + 1] == (hi - hj + 1) * 5 + (wi - wj + 2)
    assert idx[0, 1:].eq(15).all() and idx[1:, 0].eq(16).all() and idx[0, 0] == 17


def test_geometric_table_resize():
    """SSSegmentation's ImageNet table resize (14x14 window -> 40x40): the class-token rows are kept, the
    centre (offset 0) and the spline's symmetry are exact, a constant table stays constant."""
    table = torch.randn(27 * 27 + 3, 2, generator=torch.Generator().manual_seed(0))
    out = B.resize_rel_pos_table_geometric(table, 79)
    assert out.shape == (79 * 79 + 3, 2) and torch.equal(out[-3:], table[-3:])
    src, dst = table[:-3].view(27, 27, 2), out[:-3].view(79, 79, 2)
    assert torch.allclose(dst[39, 39], src[13, 13], atol=1e-5)
    const = B.resize_rel_pos_table_geometric(torch.full((27 * 27 + 3, 1), 0.7), 79)
    assert torch.allclose(const, torch.full_like(const, 0.7), atol=1e-5)
    sym = table[:-3].view(27, 27, 2)
    sym = (sym + sym.flip(0).flip(1)) / 2
    out = B.resize_rel_pos_table_geometric(torch.cat([sym.reshape(-1, 2), table[-3:]]), 79)[:-3].view(79, 79, 2)
    assert torch.allclose(out, out.flip(0).flip(1), atol=1e-4)


@pytest.mark.parametrize("name,bb", [
    ("upernet_beit_base_ade20k", {"depth": 4, "out_indices": [0, 1, 2, 3]}),  # transformers' resizing of the tables
    ("upernet_maevitbase_ade20k", {"depth": 4, "out_indices": [0, 1, 2, 3]}),  # and of MAE's position embedding
])
def test_beit_whole_predict_any_size(name, bb):
    """Whole-image inference on an image whose size is neither the window's nor a multiple of the patch."""
    if name.startswith("upernet_mae") and not SSSEG_REGISTERED:
        pytest.skip("the SSSegmentation MAE config is not registered")
    import numpy as np
    model = segzoo.create_model(name, backbone=bb).eval()
    img = np.random.default_rng(0).integers(0, 255, (70, 99, 3), dtype=np.uint8)
    labels = model.predict(img, mode="whole", resize=False)
    assert labels.shape == (70, 99) and labels.min() >= 0 and labels.max() < 150


def _fake_imagenet(grid: int, depth: int, dim: int, heads: int, mae: bool) -> dict:
    """An ImageNet checkpoint as the references' files hold it (timm / Microsoft names, a 224 / 16 = 14
    grid, the classifier and derived buffers included), random values."""
    g = torch.Generator().manual_seed(3)
    n = (2 * grid - 1) ** 2 + 3
    sd = {"cls_token": torch.randn(1, 1, dim, generator=g), "patch_embed.proj.weight": torch.randn(dim, 3, 16, 16),
          "patch_embed.proj.bias": torch.randn(dim), "head.weight": torch.randn(10, dim), "head.bias": torch.randn(10),
          ("norm" if mae else "fc_norm") + ".weight": torch.randn(dim)}
    if mae:
        sd["pos_embed"] = torch.randn(1, grid * grid + 1, dim, generator=g)
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": torch.rand(dim), p + "norm1.bias": torch.randn(dim),
                   p + "norm2.weight": torch.rand(dim), p + "norm2.bias": torch.randn(dim),
                   p + "attn.qkv.weight": torch.randn(3 * dim, dim), p + "attn.proj.weight": torch.randn(dim, dim),
                   p + "attn.proj.bias": torch.randn(dim), p + "mlp.fc1.weight": torch.randn(4 * dim, dim),
                   p + "mlp.fc1.bias": torch.randn(4 * dim), p + "mlp.fc2.weight": torch.randn(dim, 4 * dim),
                   p + "mlp.fc2.bias": torch.randn(dim)})
        if mae:
            sd[p + "attn.qkv.bias"] = torch.randn(3 * dim)
        else:
            sd.update({p + "attn.q_bias": torch.randn(dim), p + "attn.v_bias": torch.randn(dim),
                       p + "gamma_1": torch.rand(dim), p + "gamma_2": torch.rand(dim),
                       p + "attn.relative_position_bias_table": torch.randn(n, heads, generator=g),
                       p + "attn.relative_position_index": torch.zeros(grid * grid + 1, grid * grid + 1)})
    return sd


@pytest.mark.parametrize("mae", [False, True])
def test_beit_imagenet_weights(mae, tmp_path, monkeypatch):
    """``pretrained_backbone``'s path (the download replaced by a local file): a 224-pixel ImageNet
    checkpoint fitted to a 320-pixel model (14 x 14 -> 20 x 20 grid) as SSSegmentation's loaders fit
    it, compared with the reference's own functions: ``resizerelposembed`` (its
    ``interp2d(kind="cubic")``, gone from the installed scipy, replaced by the scipy guide's
    point-for-point RectBivariateSpline form) and MAE's ``resizeabsposembed``; the neck and what
    MAE's file lacks keep their initialisation."""
    import types
    from scipy.interpolate import RectBivariateSpline
    import ssseg.modules.models.backbones.beit as ssseg_beit
    from ssseg.modules.models.backbones.beit import BEiT as RefBEiT
    from ssseg.modules.models.backbones.mae import MAE as RefMAE
    from segzoo import _factory

    def interp2d(x, y, z, kind):  # scipy's interp2d transition guide, section 1.1
        assert kind == "cubic"
        spline = RectBivariateSpline(x, y, z.T, kx=3, ky=3, s=0)
        return lambda xnew, ynew: spline(xnew, ynew).T
    monkeypatch.setattr(ssseg_beit, "interpolate", types.SimpleNamespace(interp2d=interp2d))

    dim, heads, depth = 64, 4, 2
    sd = _fake_imagenet(14, depth, dim, heads, mae)
    path = tmp_path / "imagenet.pth"
    torch.save({"model": sd}, path)
    monkeypatch.setattr(_factory.hub, "fetch_weights", lambda sources, label="": (path, dict(sources[0])))
    arch = {"type": "beit", "img_size": [320, 320], "patch_size": 16, "embed_dim": dim, "depth": depth,
            "num_heads": heads, "qkv_bias": True if mae else "qv", "init_values": 1.0 if mae else 0.1,
            "abs_pos_embed": mae, "out_indices": [0, 1], "neck": [2, 1],
            "pretrained_tag": "mae_pretrain_vit_base" if mae else "beit_base_patch16_224_pt22k_ft22k"}
    from segzoo.models.backbones import build_backbone
    ours = build_backbone(arch)
    neck_before = {k: v.clone() for k, v in ours.state_dict().items() if k.startswith("neck.")}
    _factory.load_imagenet(ours, arch)
    ref_cls = RefMAE if mae else RefBEiT
    ref = ref_cls(structure_type="x", img_size=(320, 320), embed_dims=dim, num_layers=depth, num_heads=heads,
                  out_indices=(0, 1), init_values=1.0 if mae else 0.1, pretrained=False)
    theirs = ref.resizerelposembed(ref.beitconvert(dict(sd)))
    if mae:
        theirs = ref.resizeabsposembed(theirs)
    missing, _ = ref.load_state_dict(theirs, strict=False)
    own = ours.state_dict()
    for k, v in B.convert_sssegmentation(ref.state_dict()).items():
        assert torch.allclose(own[k], v, atol=1e-5, rtol=1e-5), k
    assert all(torch.equal(own[k], v) for k, v in neck_before.items())
    if mae:  # what the MAE file lacks: layer scales (init_values) and bias tables (zero), as in the reference
        assert any(k.endswith("gamma_1") for k in missing) and own["blocks.0.gamma_1"].eq(1.0).all()
        assert own["blocks.0.attn.relative_position_bias_table"].eq(0).all()


def test_beit_layer_wise_lr_decay():
    """The recipe's ``layer_wise_vit`` decay gives every backbone parameter the lr multiplier and weight
    decay SSSegmentation's ``LearningRateDecayParamsConstructor`` gives it."""
    from ssseg.modules.models.backbones.beit import BEiT as RefBEiT
    from ssseg.modules.models.optimizers.paramsconstructor import LearningRateDecayParamsConstructor
    from segzoo.models.backbones import build_backbone
    from segzoo.train.optim import param_groups
    rules = {"decay_rate": 0.9, "decay_type": "layer_wise_vit", "num_layers": 3}
    ref = torch.nn.Module()
    ref.backbone_net = RefBEiT(structure_type="x", img_size=(64, 64), embed_dims=32, num_layers=3, num_heads=2,
                               out_indices=(0, 1, 2), pretrained=False)
    ours = torch.nn.Module()
    ours.backbone = build_backbone({"type": "beit", "img_size": [64, 64], "embed_dim": 32, "depth": 3, "num_heads": 2,
                                    "out_indices": [0, 1, 2]})
    theirs = LearningRateDecayParamsConstructor(params_rules=dict(rules),
                                                optimizer_cfg={"lr": 1.0, "weight_decay": 0.05})(ref)
    want = {}
    for g in theirs:
        for n in g["param_names"]:
            (k,) = B.convert_sssegmentation({n[len("backbone_net."):]: None})
            want["backbone." + k] = (round(g["lr_multiplier"], 9), g["weight_decay"])
    got = {n: (round(g["lr_multiplier"], 9), g["weight_decay"])
           for g in param_groups(ours, {"lr": 1.0, "weight_decay": 0.05,
                                        "params_rules": {"type": "LearningRateDecayParamsConstructor", **rules}})
           for n in g["names"]}
    assert got == want
