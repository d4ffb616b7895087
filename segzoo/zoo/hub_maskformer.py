"""Records for the transformers-format MaskFormer checkpoints on the Hugging Face Hub:
``facebook/maskformer-swin-{tiny,small,base,large}-ade`` (``MaskFormerForInstanceSegmentation``, ADE20K).

The Hub repos are transformers' conversions of the original MaskFormer checkpoints
(facebookresearch/MaskFormer, ADE20K-150 semantic segmentation, Swin backbones; the conversion
script is transformers' ``convert_maskformer_swin_to_pytorch.py``). Where each value comes from:

* Swin backbone (embed_dim, depths, num_heads, window_size, drop_path_rate): the original configs
  ``configs/ade20k-150/swin/maskformer_swin_{tiny_bs16_160k,small_bs16_160k,
  base_IN21k_384_bs16_160k_res640,large_IN21k_384_bs16_160k_res640}.yaml`` (facebookresearch/MaskFormer
  at da3e60d85fdeedcb31476b5edd7d328826ce56cc); patch size 4, mlp_ratio 4, qkv_bias: Swin's defaults,
  as in transformers' ``SwinConfig`` / ``MaskFormerSwinConfig``.
* Pixel decoder and transformer decoder: transformers' ``MaskFormerConfig`` defaults (fpn_feature_size
  256, mask_feature_size 256, no_object_weight 0.1, dice_weight 1.0, mask_weight 20.0,
  cross_entropy_weight 1.0) and its DETR decoder config's (d_model 256, decoder_layers 6,
  decoder_attention_heads 8, decoder_ffn_dim 2048, num_queries 100, dropout 0.1, attention_dropout 0.0,
  activation_dropout 0.0), which are the original ``maskformer_R50_bs16_160k.yaml`` values the Swin
  configs inherit (CONVS_DIM 256, MASK_DIM 256, NORM GN, HIDDEN_DIM 256, NUM_OBJECT_QUERIES 100,
  NHEADS 8, DROPOUT 0.1, DIM_FEEDFORWARD 2048, ENC_LAYERS 0, DEC_LAYERS 6, PRE_NORM False,
  NO_OBJECT_WEIGHT 0.1, DICE_WEIGHT 1.0, MASK_WEIGHT 20.0); 150 labels.
* Test protocol: the original configs' single-scale test (shortest side 512, longest at most 2048
  for tiny/small; 640 / 2560 for base/large), whole image; semantic logits combined at the mask
  resolution and then resized, as transformers' ``post_process_semantic_segmentation`` does.
* Metrics: ADE20K val mIoU (single scale) and mIoU (multi-scale + flip) of each original checkpoint,
  MaskFormer MODEL_ZOO.md "ADE20K Semantic Segmentation" table (same numbers in the paper, Cheng et
  al., "Per-Pixel Classification is Not All You Need for Semantic Segmentation", NeurIPS 2021,
  arXiv 2107.06278, Table 1).
* Recipe: the same configs (AdamW lr 6e-5, weight decay 0.01, none on norms and embeddings,
  160k iterations at batch 16, linear warmup 1500 iterations from 1e-6, poly decay with detectron2
  DeepLab's default power 0.9, full-model gradient clipping at 0.01).
"""
from __future__ import annotations

import copy

from ..registry import ModelRecord, register
from . import dataset_meta

_IMAGENET = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_ZOO = "https://github.com/facebookresearch/MaskFormer/blob/da3e60d85fdeedcb31476b5edd7d328826ce56cc"

# variant -> (embed_dim, depths, num_heads, window_size, crop / test short side, test long side max,
#             original config, ImageNet weights, mIoU, mIoU ms+flip)
_VARIANTS = {
    "tiny": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7, 512, 2048, "maskformer_swin_tiny_bs16_160k",
             "ImageNet-1K, 224x224 (swin_tiny_patch4_window7_224)", 46.7, 48.8),
    "small": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7, 512, 2048, "maskformer_swin_small_bs16_160k",
              "ImageNet-1K, 224x224 (swin_small_patch4_window7_224)", 49.8, 51.0),
    "base": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12, 640, 2560, "maskformer_swin_base_IN21k_384_bs16_160k_res640",
             "ImageNet-22K, 384x384 (swin_base_patch4_window12_384_22k)", 52.7, 53.9),
    "large": (192, [2, 2, 18, 2], [6, 12, 24, 48], 12, 640, 2560, "maskformer_swin_large_IN21k_384_bs16_160k_res640",
              "ImageNet-22K, 384x384 (swin_large_patch4_window12_384_22k)", 54.1, 55.6),
}

# MaskFormerConfig / DETR decoder defaults (see the module docstring)
HEAD = {"type": "maskformer", "in_index": [0, 1, 2, 3], "pixel_decoder": "fpn", "channels": 256, "mask_channels": 256,
        "hidden_dim": 256, "num_queries": 100, "num_heads": 8, "num_layers": 6, "ffn_channels": 2048, "dropout": 0.1,
        "attn_dropout": 0.0, "ffn_dropout": 0.0, "semantic_at": "masks",
        "criterion": {"cost_class": 1.0, "cost_mask": 20.0, "cost_dice": 1.0, "eos_coef": 0.1, "num_points": 0,
                      "deep_supervision": True}}


def _record(variant: str) -> ModelRecord:
    dim, depths, heads, win, crop, long_side, config, pretrain, miou, miou_ms = _VARIANTS[variant]
    repo = f"facebook/maskformer-swin-{variant}-ade"
    ade = dataset_meta("ade20k")
    backbone = {"type": "swin", "embed_dim": dim, "depths": depths, "num_heads": heads, "window_size": win,
                "mlp_ratio": 4.0, "qkv_bias": True, "patch_size": 4, "drop_path_rate": 0.3}
    arch = {"segmentor": "maskformer", "backbone": backbone, "decode_head": copy.deepcopy(HEAD), "aux_heads": [],
            "num_classes": 150, "align_corners": False}
    config_url = f"{_ZOO}/configs/ade20k-150/swin/{config}.yaml"
    recipe = {
        "optimizer": {"type": "AdamW", "lr": 6e-05, "betas": [0.9, 0.999], "weight_decay": 0.01,
                      "params_rules": {"norm": {"wd_multiplier": 0.0}, "relative_position_bias_table":
                                       {"wd_multiplier": 0.0}, "absolute_pos_embed": {"wd_multiplier": 0.0}}},
        "scheduler": {"type": "PolyScheduler", "power": 0.9, "min_lr": 0.0,
                      "warmup_cfg": {"type": "linear", "iters": 1500, "ratio": 1e-06},
                      "clipgrad_cfg": {"max_norm": 0.01, "norm_type": 2}},
        "iterations": 160000, "batch_size": 16, "crop_size": [crop, crop], "amp": None, "drop_path_rate": 0.3,
        "losses": {}, "criterion": dict(HEAD["criterion"]), "pretrain": pretrain,
        "train_pipeline": f"ResizeShortestEdge choice [{crop // 2}..{crop * 2}] step {crop // 10}, max "
                          f"{long_side}; RandomCrop {crop}x{crop} single category max area 1.0; RandomFlip; "
                          "ColorAugSSD (mask_former_semantic dataset mapper)",
        "source": {"citation": f"facebookresearch/MaskFormer configs/ade20k-150/swin/{config}.yaml + "
                               "configs/ade20k-150/maskformer_R50_bs16_160k.yaml + Base-ADE20K-150.yaml",
                   "url": config_url},
    }
    source = {"project": "transformers", "repo_id": repo,
              "converted_from": f"facebookresearch/MaskFormer {config} (model zoo checkpoint)",
              "metrics_source": {"citation": "facebookresearch/MaskFormer MODEL_ZOO.md, ADE20K Semantic Segmentation "
                                             f"table, row {config} (mIoU, mIoU ms+flip); MaskFormer paper "
                                             "(arXiv 2107.06278) Table 1",
                                 "url": f"{_ZOO}/MODEL_ZOO.md"}}
    inference = {"mode": "whole", "crop_size": None, "stride": None, "scales": [1.0], "flip": False,
                 "probs_before_resize": False, "resize": {"size": [long_side, crop], "keep_ratio": True}}
    return ModelRecord(
        name=f"maskformer_swin_{variant}_ade20k", architecture="maskformer", backbone=f"swin_{variant}",
        dataset="ade20k", num_classes=150, arch=arch, class_names=tuple(ade["class_names"]), crop_size=(crop, crop),
        inference=inference, normalization=_IMAGENET, metrics={"mIoU": miou, "mIoU_ms": miou_ms},
        weights=tuple({"hf_hub_id": repo, "filename": f, "revision": "main", "format": "transformers"}
                      for f in _HUB_FILES),
        source=source, recipe=recipe)


RECORDS = [_record(v) for v in _VARIANTS]
for _r in RECORDS:
    register(_r)
