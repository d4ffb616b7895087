"""Parity of MaskFormer (Swin) with sssegmentation==1.7.0's ``MaskFormer`` and with transformers'
``MaskFormerForInstanceSegmentation``.

Random weights everywhere (BatchNorm statistics, LayerNorm/GroupNorm weights and relative position
bias tables included), the reference's checkpoint loaded strictly through ``create_model``; Swin
depths shrunk identically on both sides; non-square inputs that are not multiples of 32.

* SSSegmentation: eval logits are its ``seg_logits`` (masks resized to the input, softmax over the
  classes without "no object", sigmoid masks, summed over the queries). The reference's predictor
  imports ``fvcore`` (not installed here) only for ``c2_xavier_fill`` on its input projection, an
  initialisation the random weights replace: a stand-in module provides it.
* transformers: eval logits are what ``post_process_semantic_segmentation`` computes before its
  argmax (the same combination at the mask resolution, then resized to the input), written out from
  the model's ``class_queries_logits`` / ``masks_queries_logits``; its label maps are compared too.
  The reference is built from the Hub repos' config values (``HUB_CONFIGS``, cited there). One
  checkpoint is the installed transformers' ``state_dict()`` (``o_proj``, ``mlp.fc1`` names; converted
  with ``segzoo.convert.to_segzoo(..., "transformers")``: ``detect_format`` does not yet recognise a
  MaskFormer checkpoint), the other ``save_pretrained``'s file served by the Hub emulator and loaded
  as the record's own weights (``pretrained=True``).
"""
import copy

import numpy as np
import pytest
import torch

import segzoo
from segzoo.registry import get_record
from segzoo.train.mask_classification import MaskClassificationCriterion
from _ssseg import build_ssseg, install_fvcore_stand_in, load_reference, randomize_, rel_diff, ssseg_logits


def _perturb_norms_(model: torch.nn.Module, seed: int = 1) -> None:
    """What ``randomize_`` leaves at its initial value: LayerNorm / GroupNorm weights (ones) and the
    relative position bias tables (zeros)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.copy_(torch.randn(p.shape, generator=g))


def _check_train_outputs(model, num_classes: int, num_layers: int, size=(64, 96)) -> None:
    model.train()
    out = model(torch.randn(2, 3, *size))
    q = model.decode_head.transformer.query_embed.num_embeddings
    assert set(out) == {"pred_logits", "pred_masks", "aux_outputs", "logits", "aux_logits"} <= set(type(model).LOSSES)
    assert out["pred_logits"].shape == (2, q, num_classes + 1)
    assert out["pred_masks"].shape == (2, q, size[0] // 4, size[1] // 4)
    assert out["logits"].shape == (2, num_classes, size[0] // 4, size[1] // 4) and out["aux_logits"] == []
    assert len(out["aux_outputs"]) == num_layers - 1
    assert all(a["pred_masks"].shape == out["pred_masks"].shape for a in out["aux_outputs"])
    labels = torch.randint(0, num_classes, (2, *size))
    labels[:, :5] = 255
    criterion = MaskClassificationCriterion.from_model(model)
    assert torch.equal(criterion.empty_weight, model.criterion.empty_weight)  # the checkpoint's class weights
    losses = criterion(out, labels)
    assert len(losses) == 3 * num_layers and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.decode_head.classifier.weight.grad is not None
    model.eval()


SSSEG_CASES = [  # (config, shrunk depths, input size)
    ("maskformer_swintiny_ade20k", [1, 1, 1, 2], (99, 134)),   # window 7
    ("maskformer_swinbase_ade20k", [1, 1, 1, 2], (107, 150)),  # window 12, 1024-channel PPM input
]


@pytest.mark.parametrize("config,depths,size", SSSEG_CASES)
def test_maskformer_ssseg_parity(config, depths, size, tmp_path):
    install_fvcore_stand_in()
    # structure_type names ImageNet weights and pins their depths; a custom name lifts the pin
    ref, cfg = build_ssseg(config, depths=depths, structure_type="swin_shallow")
    _perturb_norms_(ref)
    model = load_reference(ref, config, tmp_path, backbone={"depths": depths})
    assert model.record.source["config"] == config and model.record.name.endswith("_ssseg")
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x)
    theirs = ssseg_logits(ref, x)
    assert ours.shape == theirs.shape == (1, 150, *size)
    d = rel_diff(ours, theirs)
    print(f"{config} {tuple(x.shape)}: max rel diff {d:.2e}")
    assert d <= 1e-4
    _check_train_outputs(model, 150, cfg["head"]["predictor"]["dec_layers"])


# The architecture of each facebook/maskformer-swin-*-ade repo's config.json, kept here so that the
# reference is not configured from segzoo's own record. Sources: the Swin values of the original
# configs the repos were converted from (facebookresearch/MaskFormer configs/ade20k-150/swin/*.yaml at
# da3e60d85fdeedcb31476b5edd7d328826ce56cc); everything else is MaskFormerConfig's default and its
# DETR decoder config's (transformers' configuration_maskformer.py: fpn_feature_size 256,
# mask_feature_size 256, no_object_weight 0.1, dice_weight 1.0, mask_weight 20.0; d_model 256,
# decoder_layers 6, 8 heads, ffn 2048, 100 queries, dropout 0.1, attention/activation dropout 0.0).
_COMMON = {"patch_size": 4, "mlp_ratio": 4.0, "qkv_bias": True, "fpn_feature_size": 256, "mask_feature_size": 256,
           "d_model": 256, "decoder_layers": 6, "decoder_attention_heads": 8, "decoder_ffn_dim": 2048,
           "num_queries": 100, "dropout": 0.1, "attention_dropout": 0.0, "activation_dropout": 0.0,
           "no_object_weight": 0.1, "dice_weight": 1.0, "mask_weight": 20.0, "num_labels": 150}
HUB_CONFIGS = {
    "facebook/maskformer-swin-tiny-ade": dict(_COMMON, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                                              window_size=7),
    "facebook/maskformer-swin-small-ade": dict(_COMMON, embed_dim=96, depths=[2, 2, 18, 2],
                                               num_heads=[3, 6, 12, 24], window_size=7),
    "facebook/maskformer-swin-base-ade": dict(_COMMON, embed_dim=128, depths=[2, 2, 18, 2],
                                              num_heads=[4, 8, 16, 32], window_size=12),
    "facebook/maskformer-swin-large-ade": dict(_COMMON, embed_dim=192, depths=[2, 2, 18, 2],
                                               num_heads=[6, 12, 24, 48], window_size=12),
}


def _hub_record(repo: str) -> str:
    names = [n for n in segzoo.list_models("maskformer*") if get_record(n).source.get("repo_id") == repo]
    assert len(names) == 1, (repo, names)
    return names[0]


@pytest.mark.parametrize("repo", sorted(HUB_CONFIGS))
def test_maskformer_hub_records_match_published_configs(repo):
    pub, rec = HUB_CONFIGS[repo], get_record(_hub_record(repo))
    bb, head = rec.arch["backbone"], rec.arch["decode_head"]
    keys = ("embed_dim", "depths", "num_heads", "window_size", "patch_size", "mlp_ratio", "qkv_bias")
    assert {k: bb[k] for k in keys} == {k: pub[k] for k in keys}
    assert (head["type"], head["pixel_decoder"], head["channels"], head["mask_channels"], head["hidden_dim"],
            head["num_layers"], head["num_heads"], head["ffn_channels"], head["num_queries"], head["dropout"],
            head["attn_dropout"], head["ffn_dropout"], head["semantic_at"]) == \
        ("maskformer", "fpn", pub["fpn_feature_size"], pub["mask_feature_size"], pub["d_model"],
         pub["decoder_layers"], pub["decoder_attention_heads"], pub["decoder_ffn_dim"], pub["num_queries"],
         pub["dropout"], pub["attention_dropout"], pub["activation_dropout"], "masks")
    crit = head["criterion"]
    assert (crit["eos_coef"], crit["cost_dice"], crit["cost_mask"], crit["cost_class"]) == \
        (pub["no_object_weight"], pub["dice_weight"], pub["mask_weight"], 1.0)
    assert rec.arch["num_classes"] == rec.num_classes == pub["num_labels"] and rec.dataset == "ade20k"
    assert rec.metrics["mIoU"] > 40 and rec.weights[0]["format"] == "transformers"


def _hf_maskformer(repo: str, depths):
    """transformers' MaskFormer as the repo publishes it (HUB_CONFIGS), Swin depths shrunk."""
    from transformers import MaskFormerConfig, MaskFormerForInstanceSegmentation, SwinConfig
    pub = HUB_CONFIGS[repo]
    swin = SwinConfig(embed_dim=pub["embed_dim"], depths=depths, num_heads=pub["num_heads"],
                      window_size=pub["window_size"], mlp_ratio=pub["mlp_ratio"], qkv_bias=pub["qkv_bias"],
                      patch_size=pub["patch_size"], drop_path_rate=0.3,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = MaskFormerConfig(backbone_config=swin, num_labels=pub["num_labels"], fpn_feature_size=pub["fpn_feature_size"],
                           mask_feature_size=pub["mask_feature_size"], no_object_weight=pub["no_object_weight"],
                           dice_weight=pub["dice_weight"], mask_weight=pub["mask_weight"])
    dec = cfg.decoder_config
    for key in ("d_model", "decoder_layers", "decoder_attention_heads", "decoder_ffn_dim", "num_queries", "dropout",
                "attention_dropout", "activation_dropout"):
        assert getattr(dec, key) == pub[key], key  # the defaults the Hub configs were written with
    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(cfg).eval()
    randomize_(model)
    _perturb_norms_(model)
    return model


def _hf_semantic(ref, x: torch.Tensor):
    """transformers' semantic logits at the input's size (post_process_semantic_segmentation before its
    argmax) and its label map."""
    from transformers import MaskFormerImageProcessor
    with torch.no_grad():
        out = ref(pixel_values=x)
    probs = out.class_queries_logits.softmax(-1)[..., :-1]
    seg = torch.einsum("bqc,bqhw->bchw", probs, out.masks_queries_logits.sigmoid())
    logits = torch.nn.functional.interpolate(seg, size=x.shape[-2:], mode="bilinear", align_corners=False)
    labels = MaskFormerImageProcessor().post_process_semantic_segmentation(out, target_sizes=[x.shape[-2:]])[0]
    return logits, labels


HF_CASES = [  # (Hub repo, shrunk depths, input size, how the reference checkpoint is written)
    ("facebook/maskformer-swin-tiny-ade", [1, 1, 1, 2], (101, 141), "state_dict"),
    ("facebook/maskformer-swin-base-ade", [1, 1, 1, 2], (117, 150), "save_pretrained"),
]


@pytest.mark.parametrize("repo,depths,size,save", HF_CASES)
def test_maskformer_transformers_parity(repo, depths, size, save, tmp_path, request):
    from segzoo.convert import to_segzoo
    ref = _hf_maskformer(repo, depths)
    name = _hub_record(repo)
    if save == "state_dict":  # the installed transformers' names
        arch = copy.deepcopy(dict(get_record(name).arch))
        arch["backbone"]["depths"] = depths
        sd, _ = to_segzoo(ref.state_dict(), arch, "transformers")
        model = segzoo.create_model(name, checkpoint=sd, backbone={"depths": depths})
    else:  # the Hub files' names, served by the emulated Hub as the record's own weights
        hub_env = request.getfixturevalue("hub_env")
        ref.save_pretrained(tmp_path / "ref")
        hub_env.add_repo_file(repo, "model.safetensors", (tmp_path / "ref" / "model.safetensors").read_bytes())
        model = segzoo.create_model(name, pretrained=True, backbone={"depths": depths})
        assert hub_env.requests_to(f"/{repo}/resolve/main/model.safetensors")
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.forward_upsampled(x)
    theirs, labels = _hf_semantic(ref, x)
    assert ours.shape == theirs.shape == (1, 150, *size)
    d = rel_diff(ours, theirs)
    print(f"{name} {tuple(x.shape)}: max rel diff {d:.2e}")
    assert d <= 1e-4
    assert (ours[0].argmax(0) == labels).float().mean() > 0.999


def test_maskformer_create_and_predict():
    """Every MaskFormer record builds (shallow); a whole-mode predict on a small image gives labels at
    its size, for both semantic_at variants."""
    names = segzoo.list_models("maskformer*")
    assert len(names) == 7  # 4 Hub records, 3 SSSegmentation configs
    img = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    for name in ("maskformer_swin_tiny_ade20k", "maskformer_swin_tiny_ade20k_ssseg"):
        model = segzoo.create_model(name, backbone={"depths": [1, 1, 1, 1]},
                                    decode_head={"num_layers": 2, "num_queries": 10, "ffn_channels": 64})
        assert model.num_classes == 150
        labels = model.predict(img, mode="whole", resize=False)
        assert labels.shape == (45, 70) and 0 <= labels.min() and labels.max() < 150
        probs = model.predict(img, mode="whole", resize=False, output="logits")
        assert probs.shape == (150, 45, 70) and np.isfinite(probs).all()


def test_maskformer_options():
    from segzoo.models.heads.maskformer import sine_position_embedding
    with pytest.raises(ValueError, match="pixel_decoder"):
        segzoo.create_model("maskformer_swin_tiny_ade20k", backbone={"depths": [1, 1, 1, 1]},
                            decode_head={"pixel_decoder": "aspp"})
    with pytest.raises(ValueError, match="semantic_at"):
        segzoo.create_model("maskformer_swin_tiny_ade20k", backbone={"depths": [1, 1, 1, 1]},
                            decode_head={"semantic_at": "nowhere"})
    model = segzoo.create_model("maskformer_swin_tiny_ade20k", backbone={"depths": [1, 1, 1, 1]},
                                decode_head={"num_layers": 2, "num_queries": 5, "criterion": {"eos_coef": 0.2}})
    weight = model.criterion.empty_weight
    assert weight[-1].item() == pytest.approx(0.2) and weight.shape == (151,)
    with pytest.raises(RuntimeError, match="from_model"):
        model.criterion({}, torch.zeros(1, 4, 4))
    assert MaskClassificationCriterion.from_model(model, num_points=16).num_points == 16
    pos = sine_position_embedding(torch.zeros(2, 8, 3, 5), 4)
    assert pos.shape == (2, 8, 3, 5)
    # first channel: sin of the normalised row index (1..3, scaled to 2*pi at the last row)
    assert torch.allclose(pos[0, 0, :, 0], torch.sin(torch.tensor([1.0, 2.0, 3.0]) / (3 + 1e-6) * 2 * np.pi))
