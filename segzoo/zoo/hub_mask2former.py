"""Records for facebook's semantic Mask2Former (Swin) checkpoints on the Hugging Face Hub
(transformers ``Mask2FormerForUniversalSegmentation``).

The repos: ``facebook/mask2former-swin-{tiny,small,base,base-IN21k,large}-ade-semantic`` and
``facebook/mask2former-swin-{tiny,small,base-IN21k,large}-cityscapes-semantic`` (seen on the Hub
with the search tool; there is no ``swin-base-cityscapes-semantic``). Each is a conversion of one
checkpoint of facebookresearch/Mask2Former's model zoo; the architecture (and ``drop_path_rate``,
test resolution, training recipe) is that checkpoint's detectron2 config, read at
facebookresearch/Mask2Former@9b0651c6c1d5b3af2e6da0589b719c514ec0d69a:
``configs/{ade20k,cityscapes}/semantic-segmentation/swin/maskformer2_swin_*.yaml`` over
``maskformer2_R50_bs16_{160k,90k}.yaml`` (MASK_FORMER: HIDDEN_DIM 256, NUM_OBJECT_QUERIES 100, NHEADS 8,
DIM_FEEDFORWARD 2048, DEC_LAYERS 10 = 9 layers + the prediction from the learnt queries, PRE_NORM False,
ENFORCE_INPUT_PROJ False, NO_OBJECT_WEIGHT 0.1; SEM_SEG_HEAD: CONVS_DIM 256, MASK_DIM 256, NORM GN,
deformable encoder on res3-res5, TRANSFORMER_ENC_LAYERS 6, COMMON_STRIDE 4). transformers' converter
keeps these values: ``Mask2FormerConfig``'s defaults are the same (feature_size 256, mask_feature_size
256, hidden_dim 256, encoder_feedforward_dim 1024, encoder_layers 6, decoder_layers 10,
num_attention_heads 8, dim_feedforward 2048, num_queries 100, no_object_weight 0.1, common_stride 4),
and the Swin values (embed_dim, depths, num_heads, window_size) are the yaml's.

Metrics: the Mask2Former model zoo (MODEL_ZOO.md at the same commit, "Semantic Segmentation" tables of
the ADE20K and Cityscapes sections: mIoU single scale, ``mIoU_ms`` with multi-scale + flip), the rows of
the configs the repos were converted from. The semantic inference of these records is transformers'
``post_process_semantic_segmentation`` (masks resized to 384 x 384 before they are combined, then the
scores to the image): ``decode_head.mask_size``; ``mask_size=None`` (an override) resizes the masks to
the input instead, as detectron2 (hence the published numbers) and SSSegmentation do.
"""
from __future__ import annotations

from ..registry import ModelRecord, register
from . import dataset_meta

_IMAGENET = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_COMMIT = "9b0651c6c1d5b3af2e6da0589b719c514ec0d69a"
_ZOO = f"https://github.com/facebookresearch/Mask2Former/blob/{_COMMIT}/MODEL_ZOO.md"

_SWIN = {  # variant -> (embed_dim, depths, num_heads, window_size, ImageNet pretraining)
    "tiny": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7, "ImageNet-1K 224 (swin_tiny_patch4_window7_224)"),
    "small": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7, "ImageNet-1K 224 (swin_small_patch4_window7_224)"),
    "base": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12, "ImageNet-1K 384 (swin_base_patch4_window12_384)"),
    "base_in22k": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12,
                   "ImageNet-22K 384 (swin_base_patch4_window12_384_22k)"),
    "large": (192, [2, 2, 18, 2], [6, 12, 24, 48], 12, "ImageNet-22K 384 (swin_large_patch4_window12_384_22k)"),
}

# (variant, dataset) -> (Hub repo, detectron2 config, mIoU, mIoU ms+flip)
_REPOS = {
    ("tiny", "ade20k"): ("facebook/mask2former-swin-tiny-ade-semantic", "maskformer2_swin_tiny_bs16_160k", 47.7, 49.6),
    ("small", "ade20k"): ("facebook/mask2former-swin-small-ade-semantic", "maskformer2_swin_small_bs16_160k",
                          51.3, 52.4),
    ("base", "ade20k"): ("facebook/mask2former-swin-base-ade-semantic", "maskformer2_swin_base_384_bs16_160k_res640",
                         52.4, 53.7),
    ("base_in22k", "ade20k"): ("facebook/mask2former-swin-base-IN21k-ade-semantic",
                               "maskformer2_swin_base_IN21k_384_bs16_160k_res640", 53.9, 55.1),
    ("large", "ade20k"): ("facebook/mask2former-swin-large-ade-semantic",
                          "maskformer2_swin_large_IN21k_384_bs16_160k_res640", 56.1, 57.3),
    ("tiny", "cityscapes"): ("facebook/mask2former-swin-tiny-cityscapes-semantic", "maskformer2_swin_tiny_bs16_90k",
                             82.1, 83.0),
    ("small", "cityscapes"): ("facebook/mask2former-swin-small-cityscapes-semantic",
                              "maskformer2_swin_small_bs16_90k", 82.6, 83.6),
    ("base_in22k", "cityscapes"): ("facebook/mask2former-swin-base-IN21k-cityscapes-semantic",
                                   "maskformer2_swin_base_IN21k_384_bs16_90k", 83.3, 84.5),
    ("large", "cityscapes"): ("facebook/mask2former-swin-large-cityscapes-semantic",
                              "maskformer2_swin_large_IN21k_384_bs16_90k", 83.3, 84.3),
}


def _decode_head() -> dict:
    return {"type": "mask2former", "in_index": [0, 1, 2, 3], "strides": [4, 8, 16, 32], "channels": 256,
            "pixel_decoder": {"channels": 256, "num_layers": 6, "num_heads": 8, "ffn_channels": 1024,
                              "num_points": 4, "common_stride": 4},
            "num_queries": 100, "num_heads": 8, "ffn_channels": 2048, "num_layers": 9, "pre_norm": False,
            "mask_channels": 256, "enforce_input_proj": False, "mask_size": [384, 384],
            # Mask2FormerConfig: class_weight, mask_weight, dice_weight, no_object_weight, train_num_points,
            # oversample_ratio, importance_sample_ratio, use_auxiliary_loss (the yaml's values)
            "criterion": {"cost_class": 2.0, "cost_mask": 5.0, "cost_dice": 5.0, "eos_coef": 0.1, "num_points": 12544,
                          "oversample_ratio": 3.0, "importance_sample_ratio": 0.75, "deep_supervision": True}}


def _protocol(variant: str, dataset: str) -> tuple:
    """(crop size, test resize (long, short), iterations) of the detectron2 config."""
    if dataset == "cityscapes":  # MIN_SIZE_TEST 1024, MAX_SIZE_TEST 2048, CROP (512, 1024), 90k
        return (512, 1024), [2048, 1024], 90000
    if variant in ("tiny", "small"):  # MIN_SIZE_TEST 512, MAX_SIZE_TEST 2048, CROP 512, 160k
        return (512, 512), [2048, 512], 160000
    return (640, 640), [2560, 640], 160000  # the *_res640 configs


def _recipe(variant: str, dataset: str, config: str) -> dict:
    crop, _, iterations = _protocol(variant, dataset)
    folder = f"configs/{dataset}/semantic-segmentation/swin/{config}.yaml"
    return {
        "source": f"https://github.com/facebookresearch/Mask2Former/blob/{_COMMIT}/{folder}",
        "pretrain": _SWIN[variant][4], "batch_size": 16, "crop_size": list(crop), "iterations": iterations,
        "drop_path_rate": 0.3, "amp": "fp16",
        "optimizer": {"type": "AdamW", "lr": 1e-4, "weight_decay": 0.05, "params_rules": {
            "backbone": {"lr_multiplier": 0.1}, "norm": {"wd_multiplier": 0.0},
            "query_embed": {"wd_multiplier": 0.0}, "query_feat": {"wd_multiplier": 0.0},
            "level_embed": {"wd_multiplier": 0.0}}},
        "scheduler": {"type": "PolyScheduler", "power": 0.9, "min_lr": 0.0,
                      "clipgrad_cfg": {"max_norm": 0.01, "norm_type": 2}},
        "losses": {},  # the set criterion's: decode_head.criterion of the arch (model.criterion)
    }


def _records() -> list[ModelRecord]:
    recs = []
    for (variant, dataset), (repo, config, miou, miou_ms) in _REPOS.items():
        dim, depths, heads, window, _ = _SWIN[variant]
        meta = dataset_meta(dataset)
        n = meta["num_classes"]
        crop, resize, _ = _protocol(variant, dataset)
        arch = {"segmentor": "mask2former",
                "backbone": {"type": "swin", "embed_dim": dim, "depths": depths, "num_heads": heads,
                             "window_size": window, "mlp_ratio": 4.0, "qkv_bias": True, "patch_size": 4,
                             "drop_path_rate": 0.3},
                "decode_head": _decode_head(), "aux_heads": [], "num_classes": n, "align_corners": False}
        source = {"project": "transformers", "repo_id": repo,
                  "converted_from": f"facebookresearch/Mask2Former {dataset} semantic {config}",
                  "metrics_source": {"citation": f"Mask2Former MODEL_ZOO.md, {dataset} 'Semantic Segmentation' "
                                                 f"table, row {config}", "url": _ZOO}}
        recs.append(ModelRecord(
            name=f"mask2former_swin_{variant}_{dataset}", architecture="mask2former", backbone=f"swin_{variant}",
            dataset=dataset, num_classes=n, arch=arch, class_names=tuple(meta["class_names"]), crop_size=crop,
            inference={"mode": "whole", "crop_size": None, "stride": None, "scales": [1.0], "flip": False,
                       "probs_before_resize": False, "resize": {"size": resize, "keep_ratio": True}},
            normalization=_IMAGENET, metrics={"mIoU": miou, "mIoU_ms": miou_ms},
            weights=tuple({"hf_hub_id": repo, "filename": f, "revision": "main", "format": "transformers"}
                          for f in _HUB_FILES),
            source=source, recipe=_recipe(variant, dataset, config)))
    return recs


RECORDS = _records()
for _r in RECORDS:
    register(_r)
