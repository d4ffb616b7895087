"""ConvNeXt V2 (atto .. huge) on timm's ConvNeXt, with the per-stage output norms of dense heads.

timm builds the network (``ConvNeXt(use_grn=True, ls_init_value=None)`` with Linear MLPs, as the
reference has them at every size; timm's own ``convnextv2_atto`` .. ``nano`` use 1x1 convs, which
compute the same and whose weights :func:`convert_timm` reshapes), and :class:`ConvNeXtBackbone`
of ``convnext.py`` adds one LayerNorm per output stage (the reference's ``norm{i}``). The
reference, SSSegmentation 1.7.0's ``ConvNeXtV2``: patchify stem (4x4 conv + channels-first
LayerNorm), per-stage downsampling (LayerNorm + 2x2 conv), blocks of depthwise 7x7 conv ->
channels-last LayerNorm -> Linear -> GELU (erf) -> global response norm -> Linear -> residual (no
layer scale), every LayerNorm with eps 1e-6.

One difference from the reference is deliberate. Its block calls the global response norm
without ``data_format`` on channels-last activations, so the norm takes its channels-first branch
(L2 over (W, C), mean over H, gamma broadcast on H), which raises for every input of a full
network (a stage would need H == 4 * width). This module computes the norm the reference's
channels-last branch computes (L2 over H, W; mean over channels), which is ConvNeXt V2's
definition and that of the ImageNet weights; the parity test runs the reference with that branch.
"""
from __future__ import annotations

import re

import torch.nn as nn

from ..foreign import UnsupportedConfig, check_options, rename_keys, ssseg_backbone
from .base import add_fresh_out_norms, register_backbone
from .convnext import ConvNeXtBackbone

__all__ = ["convnextv2", "imagenet_weights", "from_ssseg", "SIZES", "convert_sssegmentation", "convert_timm"]

SIZES = {  # the reference's ``arch_settings``: arch -> (depths, dims)
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)), "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512)), "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)), "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)), "huge": ((3, 3, 27, 3), (352, 704, 1408, 2816))}
# (depths, dims) -> timm's ImageNet-1k fine-tuned FCMAE weights (the reference's ``*_1k_224_ema``)
_TIMM_WEIGHTS = {(d, w): f"convnextv2_{arch}.fcmae_ft_in1k" for arch, (d, w) in SIZES.items()}


@register_backbone("convnextv2")
def convnextv2(depths, dims, drop_path_rate: float = 0.0) -> nn.Module:
    depths, dims = tuple(int(d) for d in depths), tuple(int(d) for d in dims)
    if len(depths) != 4 or len(dims) != 4:
        raise ValueError(f"ConvNeXt V2 needs 4 depths and 4 dims, got depths={list(depths)}, dims={list(dims)}")
    from timm.models.convnext import ConvNeXt
    net = ConvNeXt(depths=depths, dims=dims, num_classes=0, ls_init_value=None, use_grn=True, conv_mlp=False,
                   drop_path_rate=float(drop_path_rate))
    return ConvNeXtBackbone(net)


def imagenet_weights(cfg: dict) -> dict:
    """timm's ImageNet-1k fine-tuned classifier of the size (``pretrained_tag`` picks another one,
    e.g. ``convnextv2_tiny.fcmae`` or ``convnextv2_tiny.fcmae_ft_in22k_in1k``)."""
    depths, dims = tuple(int(d) for d in cfg["depths"]), tuple(int(d) for d in cfg["dims"])
    name = cfg.get("pretrained_tag") or _TIMM_WEIGHTS.get((depths, dims))
    if name is None:
        raise ValueError(f"no ImageNet weights known for ConvNeXt V2 depths={list(depths)}, dims={list(dims)}; "
                         "pass pretrained_tag")
    return {"timm": name}


# ---- SSSegmentation config ---------------------------------------------------------------------------
_OPTIONS = {"type", "structure_type", "in_channels", "arch", "drop_path_rate", "out_indices", "norm_cfg", "act_cfg",
            "pretrained", "pretrained_model_path", "selected_indices"}


@ssseg_backbone("ConvNeXtV2")
def from_ssseg(bb: dict) -> dict:
    """SSSegmentation ``ConvNeXtV2`` config -> ``arch["backbone"]`` (the global response norm as
    ConvNeXt V2 defines it, see the module docstring)."""
    check_options(bb, _OPTIONS, "ConvNeXtV2")
    if "norm_cfg" not in bb:  # the segmentor then hands it its own norm_cfg (a BatchNorm), which it cannot build
        raise UnsupportedConfig("ConvNeXtV2 without norm_cfg (the segmentor's BatchNorm) is not ported")
    norm = dict(bb["norm_cfg"])
    norm.pop("data_format", None)  # the reference sets it per layer
    if norm != {"type": "LayerNormConvNeXtV2", "eps": 1e-6}:
        raise UnsupportedConfig(f"ConvNeXtV2 with norm_cfg={bb['norm_cfg']!r} is not ported")
    if bb.get("act_cfg", {"type": "GELU"}) != {"type": "GELU"} or bb.get("in_channels", 3) != 3:
        raise UnsupportedConfig("ConvNeXtV2 with another act_cfg or in_channels is not ported")
    if list(bb.get("out_indices", (0, 1, 2, 3))) != [0, 1, 2, 3]:
        raise UnsupportedConfig(f"ConvNeXtV2 with out_indices={bb['out_indices']!r} is not ported")
    arch = bb.get("arch", "tiny")
    if arch not in SIZES:
        raise UnsupportedConfig(f"ConvNeXtV2 arch {arch!r} is unknown")
    depths, dims = SIZES[arch]
    return {"type": "convnextv2", "depths": list(depths), "dims": list(dims),
            "drop_path_rate": float(bb.get("drop_path_rate", 0.0))}


# ---- foreign state dicts -> ours -----------------------------------------------------------------
_BLOCK = r"stages.\1.blocks.\2."
_SSSEG_RULES = [  # also the names of the original ConvNeXt V2 release
    (r"^downsample_layers\.0\.([01])\.", r"stem.\1."),
    (r"^downsample_layers\.(\d+)\.([01])\.", r"stages.\1.downsample.\2."),
    (r"^stages\.(\d+)\.(\d+)\.dwconv\.", _BLOCK + "conv_dw."),
    (r"^stages\.(\d+)\.(\d+)\.norm\.", _BLOCK + "norm."),
    (r"^stages\.(\d+)\.(\d+)\.pwconv([12])\.", _BLOCK + r"mlp.fc\3."),
    (r"^stages\.(\d+)\.(\d+)\.grn\.gamma$", _BLOCK + "mlp.grn.weight"),
    (r"^stages\.(\d+)\.(\d+)\.grn\.beta$", _BLOCK + "mlp.grn.bias"),
    (r"^norm(\d+)\.", r"out_norms.\1."),
]


def _squeeze(sd: dict) -> dict:
    """GRN vectors stored (1, 1, 1, C) and 1x1-conv MLP weights (O, I, 1, 1) -> our shapes."""
    out = {}
    for k, v in sd.items():
        if k.endswith((".mlp.grn.weight", ".mlp.grn.bias")):
            v = v.reshape(-1)
        elif re.search(r"\.mlp\.fc[12]\.weight$", k) and v.ndim == 4:
            v = v.flatten(1)
        out[k] = v
    return out


def convert_sssegmentation(sd: dict) -> dict:
    """SSSegmentation ``ConvNeXtV2`` keys (``backbone_net.`` stripped) -> ours."""
    return _squeeze(rename_keys(sd, _SSSEG_RULES))


# the classifier: timm's head (norm, fc) and norm_pre; the original release's final ``norm`` and ``head``
_TIMM_CLASSIFIER = re.compile(r"^(head\.(norm|fc|pre_logits\.fc)|norm_pre)\.(weight|bias)$")
_ORIGINAL_CLASSIFIER = re.compile(r"^(norm|head)\.(weight|bias)$")


def convert_timm(sd: dict) -> dict:
    """An ImageNet ConvNeXt V2 classifier -> ours: timm's layout (1x1-conv MLPs of the small sizes
    reshaped) or the original release's (``downsample_layers``, ``pwconv``, ``grn.gamma``; also in a
    ``model`` entry); the classifier is dropped, any other key stays (the strict load names it); the
    output norms, which a classifier does not have, start fresh (weight 1, bias 0)."""
    if "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    if any(k.startswith("downsample_layers.") for k in sd):
        out = convert_sssegmentation({k: v for k, v in sd.items() if not _ORIGINAL_CLASSIFIER.match(k)})
    else:
        out = _squeeze({k: v for k, v in sd.items() if not _TIMM_CLASSIFIER.match(k)})
    return add_fresh_out_norms(out, "stages.{i}.blocks.0.conv_dw.weight")
