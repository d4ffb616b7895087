"""Records for Apple's transformers-format DeepLabV3 checkpoints on MobileViT and MobileViTV2 (PASCAL VOC).

Architectures (``MobileViTForSemanticSegmentation`` / ``MobileViTV2ForSemanticSegmentation``):

* ``apple/deeplabv3-mobilevit-{xx-small,x-small,small}``: the values transformers' conversion script
  (``src/transformers/models/mobilevit/convert_mlcvnets_to_pytorch.py``, ``get_mobilevit_config``) sets
  on ``MobileViTConfig``: per size ``hidden_sizes`` / ``neck_hidden_sizes`` (xx-small also
  ``expand_ratio`` 2.0), and for every ``deeplabv3_*`` checkpoint ``output_stride`` 16, ``image_size``
  512, 21 labels; every other value is ``MobileViTConfig``'s default (4 heads, ``mlp_ratio`` 2,
  ``patch_size`` 2, SiLU, ``aspp_out_channels`` 256, ``atrous_rates`` [6, 12, 18], dropouts 0.1).
  The same values are in the original training configs, apple/ml-cvnets
  ``config/segmentation/deeplabv3_mobilevit_{small,x_small,xx_small}.yaml`` (output_stride 16,
  aspp_out_channels 256, aspp_rates [6, 12, 18]).
* ``apple/mobilevitv2-1.0-voc-deeplabv3``: transformers'
  ``models/mobilevitv2/convert_mlcvnets_to_pytorch.py`` (``get_mobilevitv2_config``) reads the ml-cvnets
  config ``config/segmentation/pascal_voc/deeplabv3_mobilevitv2.yaml``: width 1.0, output_stride 16,
  aspp_out_channels 512, aspp_rates [6, 12, 18], aspp_dropout 0.1, swish; the rest is
  ``MobileViTV2Config``'s default (n_attn_blocks [2, 4, 3], base_attn_unit_dims [128, 192, 256],
  ffn_multiplier 2, expand_ratio 2.0). transformers' slow test for this checkpoint expects (1, 21, 32, 32)
  logits for a 512x512 input (stride 16).

Input: transformers' ``MobileViTImageProcessor`` (the repos' preprocessor: resize the short side to
544, center-crop 512, rescale by 1/255, ``do_flip_channel_order`` RGB -> BGR, no mean/std). segzoo
feeds RGB in 0..255 and normalises ``(x - mean) / std``: ``normalization`` mean 0, std 255 gives the
0..1 range, and the BGR order is folded into the weights (``backbones/mobilevit.convert_transformers``
reverses the stem conv's input channels), so ``predict`` sees what the reference network sees. The
test-time resize keeps the 544 short side (``size`` [2048, 544], keep ratio); the center crop is not
reproduced (predict labels the whole image).

Metrics: the PASCAL VOC 2012 val mIoU the repos' model cards give (MobileViT paper's table), and for
v2 the ml-cvnets model zoo table; recipes from the ml-cvnets training configs, cited per record.
"""
from __future__ import annotations

from ..registry import ModelRecord, register
from . import dataset_meta

_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_NORM = {"mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}  # 1/255 rescale; BGR folded into the stem
_INFERENCE = {"mode": "whole", "crop_size": None, "stride": None, "scales": [1.0], "flip": False,
              "probs_before_resize": False, "resize": {"size": [2048, 544], "keep_ratio": True}}
_CVNETS = "https://github.com/apple/ml-cvnets/blob/main/"

# size -> (repo size, neck_hidden_sizes[:6] (stem + 5 stages), hidden_sizes, expand_ratio, mIoU, ml-cvnets config)
_V1 = {
    "xxs": ("xx-small", [16, 16, 24, 48, 64, 80], [64, 80, 96], 2.0, 73.6, "deeplabv3_mobilevit_xx_small.yaml"),
    "xs": ("x-small", [16, 32, 48, 64, 80, 96], [96, 120, 144], 4.0, 77.1, "deeplabv3_mobilevit_x_small.yaml"),
    "s": ("small", [16, 32, 64, 96, 128, 160], [144, 192, 240], 4.0, 79.1, "deeplabv3_mobilevit_small.yaml"),
}


def _weights(repo_id: str) -> tuple:
    return tuple({"hf_hub_id": repo_id, "filename": f, "revision": "main", "format": "transformers"}
                 for f in _HUB_FILES)


def _arch(backbone: dict, channels: int) -> dict:
    return {"segmentor": "deeplabv3", "backbone": backbone,
            "decode_head": {"type": "mobilevit_aspp", "in_index": 4, "channels": channels, "dilations": [1, 6, 12, 18],
                            "aspp_dropout": 0.1, "dropout": 0.1},
            "aux_heads": [], "num_classes": 21, "align_corners": False}


def _recipe(lr: float, weight_decay: float, config_url: str, citation: str, pretrain: str, **extra) -> dict:
    return {
        "optimizer": {"type": "AdamW", "lr": lr, "betas": [0.9, 0.999], "weight_decay": weight_decay},
        "scheduler": {"type": "CosineScheduler", "by_epoch": True, "max_epochs": 50, "min_lr": 1e-6,
                      "warmup_cfg": {"type": "linear", "iters": 500, "ratio": 0.1}},
        "batch_size": 128, "crop_size": [512, 512], "amp": "fp16", "ema": {"momentum": 0.0005},
        "losses": {"loss_cls": {"type": "CrossEntropyLoss", "scale_factor": 1.0, "ignore_index": 255}},
        "pretrain": pretrain,
        "train_pipeline": "PASCAL VOC 2012 train_aug + COCO (VOC classes); random resize / short-side resize, "
                          "random crop 512, horizontal flip (see the config)",
        "source": {"citation": citation, "url": config_url,
                   "batch_size": "train_batch_size0 32 per GPU on 4 GPUs (ml-cvnets examples/README-mobilevit.md: "
                                 "'We trained MobileViT models on the PASCAL VOC dataset using 4 NVIDIA A100 GPUs'; "
                                 "the v2 config: 'effective batch size is 128 (32 * 4 GPUs)')"},
        **extra,
    }


def _records() -> list[ModelRecord]:
    voc = dataset_meta("voc")
    recs = []
    for size, (repo_size, channels, dims, ratio, miou, config) in _V1.items():
        repo = f"apple/deeplabv3-mobilevit-{repo_size}"
        backbone = {"type": "mobilevit", "channels": channels, "dims": dims, "depths": [2, 4, 3], "expand_ratio": ratio,
                    "num_heads": 4, "mlp_ratio": 2.0, "patch_size": 2, "exp_channels": None, "output_stride": 16,
                    "flavor": "transformers"}
        url = f"{_CVNETS}config/segmentation/{config}"
        recs.append(ModelRecord(
            name=f"deeplabv3_mobilevit_{size}_voc", architecture="deeplabv3", backbone=f"mobilevit_{size}",
            dataset="voc",
            num_classes=21, arch=_arch(backbone, 256), class_names=tuple(voc["class_names"]), crop_size=(512, 512),
            inference=dict(_INFERENCE), normalization=dict(_NORM), weights=_weights(repo),
            metrics={"mIoU": miou},
            source={"project": "transformers", "repo_id": repo,
                    "converted_from": f"apple/ml-cvnets (v0.1) checkpoint deeplabv3_mobilevit_{size}.pt, config "
                                      f"config/segmentation/{config}",
                    "metrics_source": {
                        "citation": f"Hub model card of {repo}, 'Evaluation results' table (PASCAL VOC mIOU), the "
                                    "values of the MobileViT paper (arXiv 2110.02178, DeepLabv3 on PASCAL VOC 2012)",
                        "url": f"https://huggingface.co/{repo}",
                        "note": "ml-cvnets examples/README-mobilevit.md lists 72.8 / 77.1 / 79.3 (XXS / XS / S) for "
                                "the released checkpoints"}},
            recipe=_recipe(0.0009, 0.01, url, f"apple/ml-cvnets config/segmentation/{config} (optim adamw, cosine "
                                              "max_lr 0.0009, 50 epochs, warmup 500 iterations from 9e-5, "
                                              "segmentation lr_multiplier 10, EMA 0.0005, mixed precision)",
                           f"MobileViT-{size.upper()} ImageNet-1k (ml-cvnets mobilevit_{size}.pt)",
                           params_rules={"head": {"lr_multiplier": 10.0}})))
    repo = "apple/mobilevitv2-1.0-voc-deeplabv3"
    backbone = {"type": "mobilevitv2", "channels": [32, 64, 128, 256, 384, 512], "dims": [128, 192, 256],
                "depths": [2, 4, 3], "expand_ratio": 2.0, "mlp_ratio": 2.0, "patch_size": 2, "output_stride": 16,
                "flavor": "transformers"}
    url = f"{_CVNETS}config/segmentation/pascal_voc/deeplabv3_mobilevitv2.yaml"
    recs.append(ModelRecord(
        name="deeplabv3_mobilevitv2_100_voc", architecture="deeplabv3", backbone="mobilevitv2_100", dataset="voc",
        num_classes=21, arch=_arch(backbone, 512), class_names=tuple(voc["class_names"]), crop_size=(512, 512),
        inference=dict(_INFERENCE), normalization=dict(_NORM), weights=_weights(repo), metrics={"mIoU": 78.94},
        source={"project": "transformers", "repo_id": repo,
                "converted_from": "apple/ml-cvnets checkpoint "
                                  "segmentation/pascalvoc/mobilevitv2/deeplabv3-mobilevitv2-1.0.pt "
                                  "(transformers convert_mlcvnets_to_pytorch.py, task voc_deeplabv3)",
                "metrics_source": {
                    "citation": "apple/ml-cvnets docs/source/en/general/README-model-zoo.md, 'Pascal VOC 2012 "
                                "Dataset' table, row DeepLabv3 MobileViTv2-1.0 (13.3 M parameters, mIoU 78.94)",
                    "url": f"{_CVNETS}docs/source/en/general/README-model-zoo.md",
                    "note": "the Hub repo's model card gives no number"}},
        recipe=_recipe(0.0005, 0.05, url, "apple/ml-cvnets config/segmentation/pascal_voc/deeplabv3_mobilevitv2.yaml "
                                          "(optim adamw, weight_decay 0.05, no decay on BN/bias, cosine max_lr 5e-4, "
                                          "50 epochs, warmup 500 iterations from 5e-5, grad_clip 10, auxiliary head "
                                          "weight 0.4 (dropped from the Hub checkpoint), EMA 0.0005, mixed precision)",
                       "MobileViTv2-1.0 ImageNet-1k 256x256 (ml-cvnets mobilevitv2-1.0.pt)",
                       params_rules={"norm": {"wd_multiplier": 0.0}}, grad_clip=10.0)))
    return recs


RECORDS = _records()
for _r in RECORDS:
    register(_r)
