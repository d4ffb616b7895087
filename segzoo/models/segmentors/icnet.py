"""ICNet: an image cascade network. Its backbone (``icnet``, registered here) runs three branches
and fuses them coarse to fine:

* 1/8 of the input: a light branch of three stride-2 3x3 ConvNormAct on the full image;
* 1/16: a ResNet's stem (max pooling with ceil mode) and first two stages on the half-size image,
  then a 1x1 ConvNormAct;
* 1/32: the ResNet's last two stages on that map halved again, pyramid pooling, a 1x1 ConvNormAct;

then two cascade feature fusions (:class:`CascadeFusion`: the coarser map resized to the finer
one's size, a dilated 3x3 ConvNormAct, added to a 1x1 ConvNormAct of the finer map, ReLU). The
backbone returns ``[1/16 fusion branch, 1/8 fusion branch, final fusion]``: the decode head (an FCN
head) reads the last, the two auxiliary FCN heads the other two (the cascade label guidance).

The generic :class:`~segzoo.models.segmentor.Segmentor` runs it: eval mode returns the final
branch's logits (1/8 of the input).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import backbone_family, build_backbone, register_backbone
from ..foreign import UnsupportedConfig, check_options, cna_rules, rename_keys, sequential_rules, ssseg_segmentor
from ..heads.psp import ssseg_ppm_rules
from ..layers import ConvNormAct, PyramidPooling, resize

__all__ = ["CascadeFusion", "ICNetBackbone", "icnet", "icnet_backbone_from_ssseg", "convert_sssegmentation",
           "convert_timm", "imagenet_weights", "adapt_imagenet"]


class CascadeFusion(nn.Module):
    """``forward(low, high) -> (fused, low branch)``: ``low`` resized (bilinear) to ``high``'s size and
    through a 3x3 ConvNormAct with dilation 2; ``high`` through a 1x1 ConvNormAct; their sum, ReLU."""

    def __init__(self, low_channels: int, high_channels: int, channels: int, align_corners: bool = False):
        super().__init__()
        self.align_corners = align_corners
        self.conv_low = ConvNormAct(low_channels, channels, 3, dilation=2)
        self.conv_high = ConvNormAct(high_channels, channels, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.conv_low(resize(low, high.shape[-2:], self.align_corners))
        return torch.relu(low + self.conv_high(high)), low


class ICNetBackbone(nn.Module):
    """The three ICNet branches and their cascade fusion (see the module); ``out_channels`` is
    ``[channels] * 3``."""

    def __init__(self, resnet: dict, channels: int = 128, branch_channels: Sequence[int] = (64, 256, 256),
                 light_channels: int = 32, psp_channels: int = 512, pool_scales: Sequence[int] = (1, 2, 3, 6),
                 align_corners: bool = False):
        super().__init__()
        self.align_corners = align_corners
        self.resnet = build_backbone(resnet)
        self.resnet.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        widths = self.resnet.out_channels
        self.conv_sub1 = nn.Sequential(ConvNormAct(3, light_channels, 3, stride=2),
                                       ConvNormAct(light_channels, light_channels, 3, stride=2),
                                       ConvNormAct(light_channels, branch_channels[0], 3, stride=2))
        self.conv_sub2 = ConvNormAct(widths[1], branch_channels[1], 1)
        self.ppm = PyramidPooling(widths[3], psp_channels, pool_scales, align_corners)
        self.conv_sub4 = ConvNormAct(psp_channels, branch_channels[2], 1)
        self.cff_24 = CascadeFusion(branch_channels[2], branch_channels[1], channels, align_corners)
        self.cff_12 = CascadeFusion(channels, branch_channels[0], channels, align_corners)
        self.out_channels = [channels] * 3
        self.reductions = [16, 8, 8]
        self.min_input_size = 14  # the 1/32 branch halves the 1/8 map: the smallest side that stays >= 1

    def _half(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=self.align_corners)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        sub1 = self.conv_sub1(x)
        r = self.resnet
        x = r.maxpool(r.act1(r.bn1(r.conv1(self._half(x)))))
        x = r.layer2(r.layer1(x))
        sub2 = self.conv_sub2(x)
        x = r.layer4(r.layer3(self._half(x)))
        sub4 = self.conv_sub4(self.ppm(x))
        fused, low_24 = self.cff_24(sub4, sub2)
        fused, low_12 = self.cff_12(fused, sub1)
        return [low_24, low_12, fused]


@register_backbone("icnet")
def icnet(resnet: dict, channels: int = 128, branch_channels: Sequence[int] = (64, 256, 256), light_channels: int = 32,
          psp_channels: int = 512, pool_scales: Sequence[int] = (1, 2, 3, 6), align_corners: bool = False) -> nn.Module:
    """ICNet's cascade on ``resnet`` (a ``resnet`` backbone config)."""
    if resnet.get("type") != "resnet":
        raise ValueError(f"ICNet runs on a ResNet, got {resnet.get('type')!r}")
    return ICNetBackbone(resnet, channels, branch_channels, light_channels, psp_channels, pool_scales, align_corners)


# ---- weights: the ResNet's own formats, under ``resnet.`` --------------------------------------------
def _resnet():
    return backbone_family("resnet")


def _conv_sub1_rules() -> list[tuple[str, str]]:
    """The light branch's ``Sequential(conv, norm, act) * 3`` (flat) -> three ConvNormAct."""
    return [(rf"^conv_sub1\.{3 * i + j}\.", f"conv_sub1.{i}.{part}.") for i in range(3)
            for j, part in ((0, "conv"), (1, "bn"))]


def convert_sssegmentation(sd: dict) -> dict:
    """SSSegmentation's ``ICNetEncoder`` (``backbone_net.`` stripped: its ResNet at ``backbone_net.``,
    ``ppm_net``, ``conv_sub1/2/4``) -> :class:`ICNetBackbone` keys (the cascade fusions are
    SSSegmentation's ``neck``, mapped by the segmentor's key rules)."""
    resnet = {k[len("backbone_net."):]: v for k, v in sd.items() if k.startswith("backbone_net.")}
    out = {f"resnet.{k}": v for k, v in _resnet().convert_sssegmentation(resnet).items()}
    rules = [*ssseg_ppm_rules("ppm"), *_conv_sub1_rules(), *cna_rules(r"conv_sub2", "conv_sub2"),
             *cna_rules(r"conv_sub4", "conv_sub4")]
    out.update(rename_keys({k: v for k, v in sd.items() if not k.startswith("backbone_net.")}, rules))
    return out


def imagenet_weights(cfg: dict) -> dict:
    """The ResNet's ImageNet weights (the branches and fusions start random, as in the reference)."""
    return _resnet().imagenet_weights(dict(cfg["resnet"]))


def convert_timm(sd: dict) -> dict:
    return {f"resnet.{k}": v for k, v in _resnet().convert_timm(sd).items()}


def adapt_imagenet(sd: dict, backbone: nn.Module) -> dict:
    """ImageNet weights of the ResNet, the backbone's own (random) ones for the rest."""
    return {**{k: v for k, v in backbone.state_dict().items() if not k.startswith("resnet.")}, **sd}


# ---- SSSegmentation ---------------------------------------------------------------------------------
_ICNET_OPTIONS = {"encoder", "feats_channels", "in_channels_list", "dropout"}
_ENCODER_OPTIONS = {"in_channels", "layer_channels_list", "light_branch_middle_channels", "psp_out_channels",
                    "out_channels_list", "pool_scales"}


def icnet_backbone_from_ssseg(cfg: dict, backbone: dict) -> dict:
    """``arch["backbone"]`` of an SSSegmentation ICNet config, given its translated ResNet."""
    if backbone.get("type") != "resnet":
        raise UnsupportedConfig(f"ICNet on {backbone.get('type')} is not ported (only ResNet)")
    head = cfg["head"]
    enc = dict(head.get("encoder") or {})
    if set(enc) - _ENCODER_OPTIONS:
        raise UnsupportedConfig(f"ICNet encoder options {sorted(set(enc) - _ENCODER_OPTIONS)} are not ported")
    if enc.get("in_channels", 3) != 3:
        raise UnsupportedConfig("ICNet on other than 3 input channels is not ported")
    if int(backbone["depth"]) < 50 or [int(c) for c in enc.get("layer_channels_list", (512, 2048))] != [512, 2048]:
        raise UnsupportedConfig("ICNet's encoder reads the ResNet's stage widths: only bottleneck ResNets "
                                "(layer_channels_list 512, 2048) are ported")
    branches = [int(c) for c in enc.get("out_channels_list", (64, 256, 256))]
    if [int(c) for c in head["in_channels_list"]] != branches:
        raise UnsupportedConfig(f"ICNet neck in_channels_list {head['in_channels_list']} differs from the encoder's "
                                f"out_channels_list {branches}")
    return {"type": "icnet", "resnet": dict(backbone), "channels": int(head["feats_channels"]),
            "branch_channels": branches, "light_channels": int(enc.get("light_branch_middle_channels", 32)),
            "psp_channels": int(enc.get("psp_out_channels", 512)),
            "pool_scales": [int(s) for s in enc.get("pool_scales", (1, 2, 3, 6))],
            "align_corners": bool(cfg.get("align_corners", False))}


def icnet_from_ssseg(cfg: dict, sel: list) -> dict:
    """``arch["decode_head"]`` of an SSSegmentation ICNet config (its backbone:
    :func:`icnet_backbone_from_ssseg`; the two auxiliary heads read the backbone's outputs 0 and 1)."""
    head = cfg["head"]
    check_options(head, _ICNET_OPTIONS, "ICNet head")
    if list(sel) != [0, 1, 2]:
        raise UnsupportedConfig(f"ICNet with selected_indices {sel} is not ported (only [0, 1, 2])")
    aux = cfg.get("auxiliary")
    if aux is not None and (not isinstance(aux, list) or len(aux) != 2):
        raise UnsupportedConfig("ICNet with other than two auxiliary heads (or none) is not ported")
    return {"type": "fcn", "in_index": 2, "num_convs": 1, "kernel_size": 3, "channels": int(head["feats_channels"]),
            "dropout": float(head.get("dropout", 0.1))}


_KEY_RULES = [*(r for name in ("cff_24", "cff_12") for part in ("conv_low", "conv_high")
                for r in cna_rules(rf"neck\.{name}\.{part}", f"backbone.{name}.{part}")),
              *sequential_rules("decoder", "decode_head", 1)]


ssseg_segmentor("ICNet", "icnet", _KEY_RULES, backbone=icnet_backbone_from_ssseg)(icnet_from_ssseg)
