"""ResNeSt (split-attention ResNet, deep stem, average-pool downsampling) with dilation for output
stride 8/16/32, on timm's ResNet with its ``ResNestBottleneck`` and ``SplitAttn``.

timm builds the whole network; compared with SSSegmentation's ``ResNeSt`` it matches in the deep
3x3 stem (``stem_channels // 2`` wide, ``stem_channels`` out) and max pool, the bottleneck widths
(``groups=1``: the stage's planes), the split-attention conv (radix 2, one cardinal group, attention
width ``max(in * radix / 4, 32)``, radix softmax), the 3x3 average pool after the split-attention
conv of strided blocks only (``avd``, not ``avd_first``), the dilation (the first block of a
dilated stage contracts to half, as timm's ``output_stride`` does) and the shortcut's 2x2
average pool + 1x1 conv + norm of strided blocks. One rule differs and is reset after construction:
in a dilated stage timm's shortcut smooths with a stride-1 2x2 "same" average pool
(``AvgPool2dSame``) where SSSegmentation's is the identity (a 1x1 pool); native code is only that
replacement.
"""
from __future__ import annotations

import torch.nn as nn

from ..foreign import check_defaults, ssseg_backbone
from .base import register_backbone
from .resnet import convert_sssegmentation as _resnet_v1c_keys

__all__ = ["resnest", "from_ssseg", "convert_sssegmentation", "convert_timm", "imagenet_weights"]

_DEPTHS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3], 200: [3, 24, 36, 3]}
_TIMM_NAMES = {  # (depth, stem_channels) -> timm ImageNet classifier of that exact network
    (50, 64): "resnest50d.in1k", (101, 128): "resnest101e.in1k", (200, 128): "resnest200e.in1k",
}
_RADIX = 2


@register_backbone("resnest")
def resnest(depth: int = 101, output_stride: int = 8, stem_channels: int = 128, out_indices=(0, 1, 2, 3)) -> nn.Module:
    if depth not in _DEPTHS:
        raise ValueError(f"ResNeSt depth must be one of {sorted(_DEPTHS)}, got {depth}")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    if stem_channels < 2 or stem_channels % 2:
        raise ValueError(f"stem_channels must be a positive even number, got {stem_channels}")
    from timm.layers import AvgPool2dSame
    from timm.models import FeatureListNet
    from timm.models.resnest import ResNestBottleneck
    from timm.models.resnet import ResNet
    net = ResNet(block=ResNestBottleneck, layers=_DEPTHS[depth], stem_type="deep", stem_width=stem_channels // 2,
                 avg_down=True, base_width=64, cardinality=1, output_stride=output_stride,
                 block_args=dict(radix=_RADIX, avd=True, avd_first=False))
    for m in net.modules():  # dilated stages: the shortcut does not pool (see the module docstring)
        if isinstance(m, nn.Sequential) and len(m) == 3 and isinstance(m[0], AvgPool2dSame):
            m[0] = nn.Identity()
    model = FeatureListNet(net, out_indices=tuple(i + 1 for i in out_indices))
    model.out_channels = list(model.feature_info.channels())
    model.reductions = list(model.feature_info.reduction())
    model.min_input_size = 1            # padded convs, ceil-mode and padded pooling accept any size
    # BatchNorm folded, oneDNN-packed: FCN 1.03x/1.12x, DeepLabV3+ 1.08x/1.10x eager per 192x384 window
    # (1/2 threads, on a loaded 2-core machine: small gains, to be remeasured on a quiet one)
    model.frozen_inference_pays = True
    return model


# ---- SSSegmentation ---------------------------------------------------------------------------------
@ssseg_backbone("ResNeSt")
def from_ssseg(bb: dict) -> dict:
    """SSSegmentation ``ResNeSt`` config -> ``arch["backbone"]`` (its defaults: radix 2, one group,
    deep stem, average-pool shortcut, avd after the split-attention conv)."""
    check_defaults(bb, groups=1, radix=_RADIX, reduction_factor=4, use_avg_after_block_conv2=True,
                   contract_dilation=True, use_conv3x3_stem=True, use_avg_for_downsample=True, style="pytorch",
                   base_channels=64, in_channels=3)
    return {"type": "resnest", "depth": int(bb.get("depth", 101)), "output_stride": int(bb.get("outstride", 8)),
            "stem_channels": int(bb.get("stem_channels", 128))}


def convert_sssegmentation(sd: dict) -> dict:
    """SSSegmentation ``ResNeSt`` keys -> ours: the blocks share timm's names (``conv2.conv``,
    ``conv2.bn0``, ``conv2.fc1``, ...); the flat deep stem is renamed as for ResNet-V1c."""
    return _resnet_v1c_keys(sd)


def imagenet_weights(cfg: dict) -> dict:
    """timm's ImageNet classifier of the same network (``pretrained_tag`` picks another one)."""
    key = (int(cfg.get("depth", 101)), int(cfg.get("stem_channels", 128)))
    name = cfg.get("pretrained_tag") or _TIMM_NAMES.get(key)
    if name is None:
        raise ValueError(f"no ImageNet weights known for ResNeSt-{key[0]} with stem_channels={key[1]}")
    return {"timm": name}


_TIMM_CLASSIFIER = ("fc.weight", "fc.bias")


def convert_timm(sd: dict) -> dict:
    """A timm ResNeSt classifier state dict -> ours: the same names (the backbone is timm's network
    cut after the last stage), less the classifier ``fc``. Any other key stays, so the strict load
    names it."""
    return {k: v for k, v in sd.items() if k not in _TIMM_CLASSIFIER}
