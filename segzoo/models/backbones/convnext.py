"""ConvNeXt (tiny .. xlarge) on timm's ConvNeXt, with the per-stage output norms of dense heads.

timm builds the stem and the four stages; both references (SSSegmentation's ``ConvNeXt`` with
``gap_before_final_norm=False`` and transformers' ``ConvNextBackbone``) compute exactly the same
network: patchify stem (4x4 conv + channels-first LayerNorm), per-stage downsampling
(LayerNorm + 2x2 conv), blocks of depthwise 7x7 conv -> channels-last LayerNorm -> Linear -> GELU
(erf) -> Linear -> layer scale -> residual, every LayerNorm with eps 1e-6. What they add on top of
an ImageNet classifier is one LayerNorm per output stage (``norm{i}`` / ``hidden_states_norms``),
which this wrapper adds as ``out_norms``. The two references do not differ in behaviour: one
configuration serves both.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn
from timm.layers import LayerNorm2d

from ..foreign import check_defaults, rename_keys, ssseg_backbone
from .base import add_fresh_out_norms, register_backbone

__all__ = ["ConvNeXtBackbone", "convnext", "from_ssseg", "SIZES", "convert_sssegmentation", "convert_transformers", "convert_timm", "imagenet_weights"]

_EPS = 1e-6
# (depths, dims) -> timm weights used by ``pretrained=True`` when no ``pretrained_tag`` is given.
# ImageNet-1k for the sizes the references fine-tune from 1k, ImageNet-22k where only that exists
# (SSSegmentation's large/xlarge, the 640-crop transformers checkpoints).
_TIMM_WEIGHTS = {
    ((3, 3, 9, 3), (96, 192, 384, 768)): "convnext_tiny.fb_in1k",
    ((3, 3, 27, 3), (96, 192, 384, 768)): "convnext_small.fb_in1k",
    ((3, 3, 27, 3), (128, 256, 512, 1024)): "convnext_base.fb_in1k",
    ((3, 3, 27, 3), (192, 384, 768, 1536)): "convnext_large.fb_in22k",
    ((3, 3, 27, 3), (256, 512, 1024, 2048)): "convnext_xlarge.fb_in22k",
}


class ConvNeXtBackbone(nn.Module):
    """timm ConvNeXt stem + stages (classifier head dropped) and one LayerNorm per output stage.

    ``forward(x)`` returns the four stage outputs (strides 4, 8, 16, 32), each normalised by its
    ``out_norms`` layer, as NCHW tensors.
    """
    frozen_inference_pays = False  # depthwise 7x7 convs + LayerNorm: the frozen copy ran 0.98x eager (512x512)

    def __init__(self, net: nn.Module):
        super().__init__()
        self.stem = net.stem
        self.stages = net.stages
        self.out_channels = [int(f["num_chs"]) for f in net.feature_info]
        self.reductions = [int(f["reduction"]) for f in net.feature_info]
        self.min_input_size = self.reductions[-1]  # unpadded stride-s stem and downsampling convs
        self.out_norms = nn.ModuleList(LayerNorm2d(c, eps=_EPS) for c in self.out_channels)

    def lr_decay_layer(self, name: str, num_layers: int, decay_type: str) -> int:
        """The layer id of parameter ``name`` (in this module) for layer-wise learning-rate decay,
        as SSSegmentation / mmsegmentation number ConvNeXt's: ``stage_wise`` gives the stem and
        downsampling layers 0 and stage i's blocks i + 1; ``layer_wise`` numbers the blocks of the
        third stage by threes; the output norms count as the head (``num_layers + 1``)."""
        parts = name.split(".")
        if decay_type == "stage_wise":
            if parts[0] == "stem" or (parts[0] == "stages" and parts[2] == "downsample"):
                return 0
            if parts[0] == "stages":
                return int(parts[1]) + 1
            return num_layers + 1
        if decay_type == "layer_wise":
            if parts[0] == "stem":
                return 0
            if parts[0] == "stages":
                stage = int(parts[1])
                if parts[2] == "downsample":
                    return {1: 2, 2: 3}.get(stage, num_layers)
                return {0: 1, 1: 2}.get(stage, 3 + int(parts[3]) // 3 if stage == 2 else num_layers)
            return num_layers + 1
        raise ValueError(f"ConvNeXt has no {decay_type!r} learning-rate decay (stage_wise, layer_wise)")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for stage, norm in zip(self.stages, self.out_norms):
            x = stage(x)
            outs.append(norm(x))
        return outs


@register_backbone("convnext")
def convnext(depths, dims, layer_scale_init_value: float = 1e-6, drop_path_rate: float = 0.0) -> nn.Module:
    depths, dims = tuple(int(d) for d in depths), tuple(int(d) for d in dims)
    if len(depths) != 4 or len(dims) != 4:
        raise ValueError(f"ConvNeXt needs 4 depths and 4 dims, got depths={list(depths)}, dims={list(dims)}")
    # the references disable layer scale with a value <= 0; timm with None
    ls_init = float(layer_scale_init_value) if layer_scale_init_value and layer_scale_init_value > 0 else None
    from timm.models.convnext import ConvNeXt
    net = ConvNeXt(depths=depths, dims=dims, num_classes=0, ls_init_value=ls_init, drop_path_rate=float(drop_path_rate))
    return ConvNeXtBackbone(net)


def imagenet_weights(cfg: dict) -> dict:
    """timm's ImageNet classifier for the size (``pretrained_tag`` picks another one, e.g. ImageNet-22k)."""
    depths, dims = tuple(int(d) for d in cfg["depths"]), tuple(int(d) for d in cfg["dims"])
    name = cfg.get("pretrained_tag") or _TIMM_WEIGHTS.get((depths, dims))
    if name is None:
        raise ValueError(f"no ImageNet weights known for ConvNeXt depths={list(depths)}, dims={list(dims)}; "
                         "pass pretrained_tag")
    ls = cfg.get("layer_scale_init_value", 1e-6)
    if not ls or ls <= 0:
        raise ValueError("ImageNet ConvNeXt weights include layer scale; layer_scale_init_value must be > 0")
    return {"timm": name}


# ---- SSSegmentation config ---------------------------------------------------------------------------
SIZES = {  # SSSegmentation's ``arch`` -> (depths, dims)
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)), "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)), "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048))}


@ssseg_backbone("ConvNeXt")
def from_ssseg(bb: dict) -> dict:
    """SSSegmentation ``ConvNeXt`` config -> ``arch["backbone"]``; ``*_21k`` structures start from ImageNet-22k."""
    check_defaults(bb, gap_before_final_norm=False, in_channels=3, stem_patch_size=4)
    depths, dims = SIZES[bb["arch"]]
    out = {"type": "convnext", "depths": list(depths), "dims": list(dims),
           "layer_scale_init_value": float(bb.get("layer_scale_init_value", 1e-6)),
           "drop_path_rate": float(bb.get("drop_path_rate", 0.0))}
    if str(bb.get("structure_type", "")).endswith("_21k"):  # ImageNet-22k initialisation
        out["pretrained_tag"] = f"convnext_{bb['arch']}.fb_in22k"
    return out


# ---- foreign state dicts -> ours -----------------------------------------------------------------
_BLOCK = r"stages.\1.blocks.\2."
_SSSEG_RULES = [
    (r"^downsample_layers\.0\.([01])\.", r"stem.\1."),
    (r"^downsample_layers\.(\d+)\.([01])\.", r"stages.\1.downsample.\2."),
    (r"^stages\.(\d+)\.(\d+)\.depthwise_conv\.", _BLOCK + "conv_dw."),
    (r"^stages\.(\d+)\.(\d+)\.norm\.", _BLOCK + "norm."),
    (r"^stages\.(\d+)\.(\d+)\.pointwise_conv([12])\.", _BLOCK + r"mlp.fc\3."),
    (r"^stages\.(\d+)\.(\d+)\.gamma$", _BLOCK + "gamma"),
    (r"^norm(\d+)\.", r"out_norms.\1."),
]


def convert_sssegmentation(sd: dict) -> dict:
    """SSSegmentation ``ConvNeXt`` keys (``backbone_net.`` stripped) -> ours."""
    return rename_keys(sd, _SSSEG_RULES)


_HF_RULES = [
    (r"^embeddings\.patch_embeddings\.", "stem.0."),
    (r"^embeddings\.layernorm\.", "stem.1."),
    (r"^encoder\.stages\.(\d+)\.downsampling_layer\.([01])\.", r"stages.\1.downsample.\2."),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.dwconv\.", _BLOCK + "conv_dw."),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layernorm\.", _BLOCK + "norm."),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.pwconv([12])\.", _BLOCK + r"mlp.fc\3."),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer_scale_parameter$", _BLOCK + "gamma"),
]


def convert_transformers(sd: dict) -> dict:
    """transformers ``ConvNextBackbone`` keys (``backbone.`` stripped) -> ours. The Hub files and the
    installed transformers' ``state_dict()`` use the same names (no load-time renames for ConvNeXt)."""
    out = {}
    for k, v in rename_keys(sd, _HF_RULES).items():
        m = re.match(r"^hidden_states_norms\.stage(\d+)\.(.*)$", k)
        if m and int(m.group(1)) >= 1:
            k = f"out_norms.{int(m.group(1)) - 1}.{m.group(2)}"
        out[k] = v
    return out


# the classifier of timm's ConvNeXt: its head (norm, optional pre-logits MLP, fc) and the norm some
# variants put before the head; the backbone replaces them by one norm per output stage
_TIMM_CLASSIFIER = re.compile(r"^(head\.(norm|fc|pre_logits\.fc)|norm_pre)\.(weight|bias)$")


def convert_timm(sd: dict) -> dict:
    """A timm ConvNeXt classifier state dict -> ours: the classifier (``head.norm``, ``head.fc``,
    ``norm_pre``) is dropped, any other key stays (the strict load names it); the output norms, which
    an ImageNet classifier does not have, get their fresh initialisation (weight 1, bias 0), as in the
    references when they start from ImageNet weights."""
    out = {k: v for k, v in sd.items() if not _TIMM_CLASSIFIER.match(k)}
    return add_fresh_out_norms(out, "stages.{i}.blocks.0.conv_dw.weight")
