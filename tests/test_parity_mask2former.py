"""Mask2Former (Swin) against SSSegmentation 1.7.0 and transformers' Mask2FormerForUniversalSegmentation.

SSSegmentation's pixel decoder imports mmcv's compiled multi-scale deformable attention (absent here: the
names hold None); :func:`_ssseg_reference` puts segzoo's plain-PyTorch operator, tested below against a
written-out computation of its definition, in its place with mmcv's signature. It also imports
``fvcore.nn.weight_init`` (not installed) for initialisation only: a stand-in with detectron2's
``c2_xavier_fill`` is installed when fvcore is missing. Networks are shrunk (Swin depths 2, fewer
queries, decoder and encoder layers) where the code path stays the same: three or more decoder layers
visit every pixel-decoder level and wrap around.
"""
from __future__ import annotations

import math

import pytest
import torch

from segzoo.train.mask_classification import MaskClassificationCriterion

import segzoo
from _ssseg import install_fvcore_stand_in, randomize_, rel_diff, ssseg_config, ssseg_logits
from segzoo.models.heads.msdeform_attn import multi_scale_deformable_attention
from segzoo.registry import get_record

SHRINK = {"backbone": {"depths": [2, 2, 2, 2]},
          "decode_head": {"num_queries": 20, "num_layers": 4, "pixel_decoder": {"num_layers": 2}}}


# ---- the operator -----------------------------------------------------------------------------------
def _bilinear_zero_pad(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """``img`` (d, h, w) at (x, y) in [0, 1] of the map (pixel centres at (i + 0.5) / w), zero outside."""
    d, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d, dtype=img.dtype)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def test_msdeform_attn_matches_written_out_definition():
    g = torch.Generator().manual_seed(0)
    n, heads, d, q, points = 2, 2, 3, 4, 3
    shapes = [(3, 5), (2, 3)]
    value = torch.randn(n, sum(h * w for h, w in shapes), heads, d, generator=g, dtype=torch.float64)
    # locations partly outside [0, 1], so that some samples fall on the zero padding
    loc = torch.rand(n, q, heads, len(shapes), points, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(n, q, heads, len(shapes), points, generator=g, dtype=torch.float64)
    ours = multi_scale_deformable_attention(value, torch.tensor(shapes), loc, weights)
    expected = torch.zeros(n, q, heads * d, dtype=torch.float64)
    for b in range(n):
        start = 0
        for lvl, (h, w) in enumerate(shapes):
            for hd in range(heads):
                img = value[b, start:start + h * w, hd].T.reshape(d, h, w)
                for i in range(q):
                    for p in range(points):
                        x, y = loc[b, i, hd, lvl, p].tolist()
                        expected[b, i, hd * d:(hd + 1) * d] += weights[b, i, hd, lvl, p] * _bilinear_zero_pad(img, x, y)
            start += h * w
    assert ours.shape == (n, q, heads * d)
    assert torch.allclose(ours, expected, atol=1e-12)


# ---- SSSegmentation ---------------------------------------------------------------------------------
def _randomize_all_(model, seed: int = 0) -> None:
    """:func:`randomize_`, and weights the initialisers leave constant (deformable attention's offsets
    and attention weights start at 0, GroupNorm / LayerNorm weights at 1) perturbed too, so that the
    sampling locations depend on the queries."""
    randomize_(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1 and torch.all(p == p.flatten()[0]):
                p.add_(torch.randn(p.shape, generator=g) * (0.05 if p.ndim == 1 else 0.02))


def _ssseg_reference(config: str):
    install_fvcore_stand_in()
    import ssseg.modules.models.segmentors.mask2former.transformers.pixeldecoder as pixeldecoder
    from ssseg.modules.models.segmentors.builder import BuildSegmentor
    pixeldecoder.MSDeformAttnFunction = None  # its call fails, and MSDeformAttn falls back to the next name
    pixeldecoder.ms_deform_attn_core_pytorch = multi_scale_deformable_attention
    # structure_type names ImageNet weights and pins their depths; a custom name lifts the pin
    cfg = ssseg_config(config, depths=SHRINK["backbone"]["depths"], structure_type="swin_shallow")
    cfg["head"]["predictor"].update(num_queries=SHRINK["decode_head"]["num_queries"],
                                    dec_layers=SHRINK["decode_head"]["num_layers"] + 1)
    cfg["head"]["pixel_decoder"].update(transformer_enc_layers=SHRINK["decode_head"]["pixel_decoder"]["num_layers"])
    torch.manual_seed(0)
    ref = BuildSegmentor(segmentor_cfg=cfg, mode="TEST").eval()
    _randomize_all_(ref)
    return ref, cfg


SSSEG_CASES = [("mask2former_swintiny_ade20k", (64, 96)),        # window 7; stage 4 is 2x3
               ("mask2former_swinbase_cityscapes", (100, 72))]   # window 12; odd maps before patch merging


@pytest.mark.parametrize("config,size", SSSEG_CASES)
def test_mask2former_ssseg_parity(config, size, tmp_path):
    ref, cfg = _ssseg_reference(config)
    path = tmp_path / "ref.pth"
    torch.save({"model": ref.state_dict()}, path)
    model = segzoo.create_model(config, checkpoint=path, **SHRINK)
    assert model.record.source == {"project": "sssegmentation", "config": config}
    assert model.num_classes == cfg["num_classes"]
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape == (1, cfg["num_classes"], *size)
    d = rel_diff(ours, theirs)
    print(f"{config} {size}: max rel diff {d:.2e}")
    assert d <= 1e-4

    model.train()
    out = model(torch.randn(2, 3, 64, 96))
    q, c, layers = SHRINK["decode_head"]["num_queries"], cfg["num_classes"], SHRINK["decode_head"]["num_layers"]
    assert set(out) == {"pred_logits", "pred_masks", "aux_outputs", "logits", "aux_logits"}
    assert len(out["aux_outputs"]) == layers and out["aux_logits"] == []
    for o in [out, *out["aux_outputs"]]:
        assert o["pred_logits"].shape == (2, q, c + 1) and o["pred_masks"].shape == (2, q, 16, 24)
    assert model.losses_of(out) == {}  # the set criterion reads the outputs; no per-output loss
    losses = MaskClassificationCriterion.from_model(model)(out, torch.randint(0, c, (2, 64, 96), generator=torch.Generator().manual_seed(2)))
    names = {"loss_ce", "loss_mask", "loss_dice"}
    assert set(losses) == names | {f"{k}_{i}" for k in names for i in range(layers)}
    assert all(torch.isfinite(v) for v in losses.values())


# ---- transformers -----------------------------------------------------------------------------------
# Swin values of each repo's checkpoint (its detectron2 config, see segzoo/zoo/hub_mask2former.py); the
# Mask2Former values are Mask2FormerConfig's defaults, which the conversion kept.
HUB_SWIN = {
    "facebook/mask2former-swin-tiny-ade-semantic": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                                                        window_size=7, num_labels=150),
    "facebook/mask2former-swin-base-IN21k-cityscapes-semantic": dict(embed_dim=128, depths=[2, 2, 18, 2],
                                                                     num_heads=[4, 8, 16, 32], window_size=12,
                                                                     num_labels=19),
}


def _hub_record(repo: str) -> str:
    names = [n for n in segzoo.list_models("mask2former*") if get_record(n).source.get("repo_id") == repo]
    assert len(names) == 1, (repo, names)
    return names[0]


def test_mask2former_hub_records_follow_transformers_config():
    from transformers import Mask2FormerConfig
    c = Mask2FormerConfig()
    names = [n for n in segzoo.list_models("mask2former*") if get_record(n).source.get("project") == "transformers"]
    assert len(names) == 9
    for name in names:
        arch = get_record(name).arch
        head, pd = arch["decode_head"], arch["decode_head"]["pixel_decoder"]
        assert (head["channels"], head["mask_channels"], head["num_queries"], head["num_heads"], head["ffn_channels"],
                head["num_layers"], head["pre_norm"], head["enforce_input_proj"], head["criterion"]["eos_coef"]) == \
            (c.hidden_dim, c.mask_feature_size, c.num_queries, c.num_attention_heads, c.dim_feedforward,
             c.decoder_layers - 1, c.pre_norm, c.enforce_input_projection, c.no_object_weight)
        crit = head["criterion"]
        assert (crit["cost_class"], crit["cost_mask"], crit["cost_dice"], crit["num_points"], crit["oversample_ratio"],
                crit["importance_sample_ratio"], crit["deep_supervision"]) == \
            (c.class_weight, c.mask_weight, c.dice_weight, c.train_num_points, c.oversample_ratio,
             c.importance_sample_ratio, c.use_auxiliary_loss)
        assert (pd["channels"], pd["num_layers"], pd["num_heads"], pd["ffn_channels"], pd["common_stride"]) == \
            (c.feature_size, c.encoder_layers, c.num_attention_heads, c.encoder_feedforward_dim, c.common_stride)
        assert head["strides"] == list(c.feature_strides) and head["mask_size"] == [384, 384]
    for repo, pub in HUB_SWIN.items():
        arch = get_record(_hub_record(repo)).arch
        assert {k: arch["backbone"][k] for k in ("embed_dim", "depths", "num_heads", "window_size")} == \
            {k: pub[k] for k in ("embed_dim", "depths", "num_heads", "window_size")}
        assert arch["num_classes"] == pub["num_labels"]


def _hf_mask2former(repo: str):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig
    pub, shrink = HUB_SWIN[repo], SHRINK["decode_head"]
    swin = SwinConfig(embed_dim=pub["embed_dim"], depths=SHRINK["backbone"]["depths"], num_heads=pub["num_heads"],
                      window_size=pub["window_size"], drop_path_rate=0.3,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=swin, num_labels=pub["num_labels"], num_queries=shrink["num_queries"],
                            decoder_layers=shrink["num_layers"] + 1,
                            encoder_layers=shrink["pixel_decoder"]["num_layers"])
    torch.manual_seed(0)
    ref = Mask2FormerForUniversalSegmentation(cfg).eval()
    _randomize_all_(ref)
    return ref


HF_CASES = [("facebook/mask2former-swin-tiny-ade-semantic", (70, 101), "state_dict"),
            ("facebook/mask2former-swin-base-IN21k-cityscapes-semantic", (90, 77), "save_pretrained")]


@pytest.mark.parametrize("repo,size,save", HF_CASES)
def test_mask2former_transformers_parity(repo, size, save, tmp_path):
    """Eval output = ``post_process_semantic_segmentation``'s scores before the argmax (384 x 384), and,
    resized to the image by ``forward_upsampled``, with ``target_sizes`` = the image's size. In float64:
    the masked attention thresholds mask logits at 0, where float32 rounding could flip a pixel."""
    from transformers import Mask2FormerImageProcessor
    from segzoo._factory import _merge
    from segzoo.convert import to_segzoo
    from segzoo.convert.checkpoint import read_state_dict
    ref = _hf_mask2former(repo)
    if save == "state_dict":  # the installed transformers' names (swin.*, q_proj, mlp.fc1)
        path = tmp_path / "ref.pth"
        torch.save(ref.state_dict(), path)
    else:  # the Hub files' names (attention.self.query, intermediate.dense)
        ref.save_pretrained(tmp_path / "ref")
        path = tmp_path / "ref" / "model.safetensors"
    name = _hub_record(repo)
    # the format is the record's ("transformers"), as create_model(name, pretrained=True) passes it
    arch = _merge(get_record(name).arch, SHRINK)
    sd, _ = to_segzoo(read_state_dict(path), arch, "transformers")
    model = segzoo.create_model(name, checkpoint=sd, **SHRINK).double()
    ref.double()
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        ours, ours_up = model(x), model.forward_upsampled(x)
        out = ref(pixel_values=x)
    proc = Mask2FormerImageProcessor()
    theirs = proc.post_process_semantic_segmentation(out, return_segmentation_scores=True)[0].segmentation_scores
    theirs_up = proc.post_process_semantic_segmentation(out, target_sizes=[size], return_segmentation_scores=True)
    theirs_up = theirs_up[0].segmentation_scores
    assert ours.shape == (1, *theirs.shape) and ours_up.shape == (1, *theirs_up.shape) == (1, model.num_classes, *size)
    d = max(rel_diff(ours[0], theirs), rel_diff(ours_up[0], theirs_up))
    print(f"{name} {size}: max rel diff {d:.2e}")
    assert d <= 1e-4


# ---- the API ------------------------------------------------------------------------------------------
def test_mask2former_create_model_and_predict():
    """A random tiny Mask2Former through create_model and a whole-image predict at the record's protocol
    (resize skipped to keep it small); ``num_classes`` builds the class head with a "no object" column."""
    model = segzoo.create_model("mask2former_swin_tiny_ade20k_ssseg", num_classes=5, **SHRINK)
    assert model.num_classes == 5 and model.decode_head.classifier.out_features == 6
    assert model.criterion.empty_weight.tolist() == pytest.approx([1, 1, 1, 1, 1, 0.1])
    img = (torch.rand(50, 70, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    labels = model.predict(img, mode="whole", resize=False)
    assert labels.shape == (50, 70) and labels.min() >= 0 and labels.max() < 5
    logits = model.predict(img, mode="whole", resize=False, output="logits")
    assert logits.shape == (5, 50, 70) and (logits >= 0).all() and (logits <= 20).all()  # scores in [0, Q]
