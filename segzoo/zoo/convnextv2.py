"""Records without checkpoints: UPerNet on ConvNeXt V2 (atto .. huge) for ADE20k.

Neither SSSegmentation's zoo nor the Hub publishes these models: segzoo composes them, so that
they can be trained from ImageNet weights (``create_model(name, pretrained_backbone=True)`` loads
timm's ``convnextv2_<size>.fcmae_ft_in1k``) or loaded from a checkpoint. They have no weights
and no metrics. Each is composed of

* the backbone: SSSegmentation 1.7.0's ``ConvNeXtV2`` with its defaults for the size
  (``arch_settings`` depths and dims, ``drop_path_rate`` 0.0, LayerNorm eps 1e-6, GELU);
* the heads, the test protocol and the normalisation of the zoo's ConvNeXt UPerNet configs
  (``upernet_convnext{tiny,small,base}_ade20k``, which agree on them): a UPerNet decode head of
  512 channels with pool scales (1, 2, 3, 6) on all four stages, an FCN auxiliary head of 512
  channels on stage 3, dropout 0.1; sliding-window inference with 512x512 crops, stride 341,
  probabilities averaged before resizing, the image resized to fit 2048x512.

The same network is what SSSegmentation builds from a UPerNet config whose backbone is
``{'type': 'ConvNeXtV2', 'arch': <size>, 'norm_cfg': {'type': 'LayerNormConvNeXtV2', 'eps': 1e-6}}``
(tests/test_parity_convnextv2.py builds it and compares), with the global response norm as
ConvNeXt V2 defines it (see ``segzoo/models/backbones/convnextv2.py``).
"""
from __future__ import annotations

from ..registry import ModelRecord, register
from . import dataset_meta

# SSSegmentation 1.7.0 ConvNeXtV2.arch_settings: size -> (depths, dims)
SIZES = {
    "atto": ([2, 2, 6, 2], [40, 80, 160, 320]), "femto": ([2, 2, 6, 2], [48, 96, 192, 384]),
    "pico": ([2, 2, 6, 2], [64, 128, 256, 512]), "nano": ([2, 2, 8, 2], [80, 160, 320, 640]),
    "tiny": ([3, 3, 9, 3], [96, 192, 384, 768]), "base": ([3, 3, 27, 3], [128, 256, 512, 1024]),
    "large": ([3, 3, 27, 3], [192, 384, 768, 1536]), "huge": ([3, 3, 27, 3], [352, 704, 1408, 2816])}
# the zoo's ConvNeXt UPerNet configs (upernet_convnext{tiny,small,base}_ade20k)
HEAD_CONFIG = "upernet_convnexttiny_ade20k"
_DECODE = {"type": "uper", "in_index": [0, 1, 2, 3], "pool_scales": [1, 2, 3, 6], "channels": 512, "dropout": 0.1}
_AUX = [{"type": "fcn", "in_index": 2, "channels": 512, "num_convs": 1, "dropout": 0.1}]
_INFERENCE = {"mode": "slide", "crop_size": [512, 512], "stride": [341, 341], "scales": [1], "flip": False,
              "probs_before_resize": True, "resize": {"size": [2048, 512], "keep_ratio": True}}
_NORMALIZATION = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}


def _records() -> list[ModelRecord]:
    ade = dataset_meta("ade20k")
    recs = []
    for size, (depths, dims) in SIZES.items():
        arch = {"segmentor": "upernet",
                "backbone": {"type": "convnextv2", "depths": list(depths), "dims": list(dims), "drop_path_rate": 0.0},
                "decode_head": dict(_DECODE), "aux_heads": [dict(a) for a in _AUX], "num_classes": ade["num_classes"],
                "align_corners": False}
        source = {
            "project": "segzoo",
            "composed_from": {
                "backbone": f"sssegmentation==1.7.0 ConvNeXtV2(arch='{size}') with its defaults",
                "heads_and_protocol": f"sssegmentation zoo config {HEAD_CONFIG} (UPerNet + FCN auxiliary head, "
                                      "test protocol, normalisation)",
            },
            "imagenet_weights": f"timm convnextv2_{size}.fcmae_ft_in1k (pretrained_backbone=True)",
            "note": "no published checkpoint or metric",
        }
        recs.append(ModelRecord(
            name=f"upernet_convnextv2_{size}_ade20k", architecture="upernet", backbone=f"convnextv2_{size}",
            dataset="ade20k", num_classes=ade["num_classes"], arch=arch, class_names=tuple(ade["class_names"]),
            crop_size=(512, 512), inference=dict(_INFERENCE), normalization=dict(_NORMALIZATION), metrics={},
            weights=(), source=source, recipe={}))
    return recs


RECORDS = _records()
for _r in RECORDS:
    register(_r)
