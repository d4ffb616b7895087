"""JPU neck (joint pyramid upsampling, FastFCN) and FastFCN's SSSegmentation translation.

FastFCN is a DeepLabV3, PSPNet or EncNet head on a JPU neck; the segmentor is
``segzoo.models.segmentors.fastfcn.FastFCN``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..backbones import backbone_family
from ..foreign import SSSEG_SEGMENTORS, UnsupportedConfig, cna_rules, dsconv_rules, ssseg_segmentor
from ..layers import ConvNormAct, SeparableConvNormAct, resize
from .fcn import aux_key_rules
from .fpn import register_neck

__all__ = ["JPU"]


def _separable_without_depthwise_act(in_channels: int, out_channels: int, dilation: int) -> SeparableConvNormAct:
    """A 3x3 :class:`SeparableConvNormAct` whose depthwise half has no activation (conv, norm only)."""
    block = SeparableConvNormAct(in_channels, out_channels, 3, dilation=dilation)
    del block.depthwise.act
    return block


@register_neck("jpu")
class JPU(nn.Module):
    """Joint pyramid upsampling over the levels ``in_index``: a 3x3 ConvNormAct (``channels``) per
    level, the coarser ones resized (bilinear) to the first one's size and concatenated, then one
    separable 3x3 conv per dilation (depthwise conv and norm, pointwise ConvNormAct to ``channels``),
    their outputs concatenated. That map (``len(dilations) * channels`` wide) replaces the last level
    of ``in_index``; the other levels pass through."""

    def __init__(self, in_channels: Sequence[int], in_index: Sequence[int] = (1, 2, 3), channels: int = 512,
                 dilations: Sequence[int] = (1, 2, 4, 8), align_corners: bool = False):
        super().__init__()
        self.in_index = [int(i) % len(in_channels) for i in in_index]
        self.align_corners = align_corners
        self.convs = nn.ModuleList(ConvNormAct(in_channels[i], channels, 3) for i in self.in_index)
        width = channels * len(self.in_index)
        self.dilation_layers = nn.ModuleList(_separable_without_depthwise_act(width, channels, int(d))
                                             for d in dilations)
        self.out_channels = list(in_channels)
        self.out_channels[self.in_index[-1]] = channels * len(self.dilation_layers)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        xs = [conv(feats[i]) for i, conv in zip(self.in_index, self.convs)]
        size = xs[0].shape[-2:]
        x = torch.cat([xs[0], *(resize(t, size, self.align_corners) for t in xs[1:])], dim=1)
        outs = list(feats)
        outs[self.in_index[-1]] = torch.cat([layer(x) for layer in self.dilation_layers], dim=1)
        return outs


# ---- SSSegmentation (FastFCN) -----------------------------------------------------------------------
_INNER_TYPES = {"aspp": "Deeplabv3", "psp": "PSPNet", "enc": "ENCNet"}  # segzoo head -> ssseg segmentor
_JPU_OPTIONS = {"in_channels_list", "mid_channels", "dilations"}


def _inner_segmentor(cfg: dict) -> str:
    """The SSSegmentation segmentor under the JPU: the config's ``segmentor``, or (configs trimmed to
    the model keys) the one its head options name."""
    if "segmentor" in cfg:
        return cfg["segmentor"]
    head = cfg["head"]
    if "num_codes" in head:
        return "ENCNet"
    if "pool_scales" in head:
        return "PSPNet"
    if "dilations" in head:
        return "Deeplabv3"
    raise UnsupportedConfig("FastFCN: cannot tell its segmentor from the head options (only ENCNet, PSPNet, "
                            "Deeplabv3 are ported)")


def _prefixed(rules, prefix: str = r"segmentor\.") -> list:
    """Anchored rules for keys that SSSegmentation's FastFCN nests under its inner segmentor."""
    out = []
    for pattern, repl in rules:
        if not pattern.startswith("^"):
            raise ValueError(f"unanchored key rule {pattern!r}")
        out.append(("^" + prefix + pattern[1:], repl))
    return out


def _key_rules(arch: dict) -> list:
    family = backbone_family(arch["backbone"]["type"])

    def backbone_key(match) -> str:  # the backbone family's own (key-renaming) conversion
        (key,) = family.convert_sssegmentation({match.group(1): None})
        return f"backbone.{key}"

    head = arch["decode_head"]["head"]
    inner = SSSEG_SEGMENTORS[_INNER_TYPES[head["type"]]].key_rules(dict(arch, decode_head=head))
    return [(r"^segmentor\.backbone_net\.(.*)$", backbone_key), *_prefixed(aux_key_rules(arch)), *_prefixed(inner),
            *cna_rules(r"jpu_neck\.conv_layers\.(\d+)", r"neck.convs.\1"),
            *dsconv_rules(r"jpu_neck\.dilation_layers\.(\d+)", r"neck.dilation_layers.\1")]


@ssseg_segmentor("FastFCN", "fastfcn", _key_rules)
def from_ssseg(cfg: dict, sel: list) -> dict:
    if cfg["backbone"]["type"] != "ResNet":  # its checkpoint keys are renamed one by one (see _key_rules)
        raise UnsupportedConfig(f"FastFCN on {cfg['backbone']['type']} is not ported (only ResNet)")
    head = cfg["head"]
    jpu = head["jpu"]
    if set(jpu) - _JPU_OPTIONS:
        raise UnsupportedConfig(f"JPU options {sorted(set(jpu) - _JPU_OPTIONS)} are not ported")
    if len(jpu["in_channels_list"]) != len(sel):
        raise UnsupportedConfig(f"JPU over {len(jpu['in_channels_list'])} of {len(sel)} selected levels is not ported")
    neck = {"type": "jpu", "in_index": list(sel), "channels": int(jpu.get("mid_channels", 512)),
            "dilations": [int(d) for d in jpu.get("dilations", (1, 2, 4, 8))]}
    width = neck["channels"] * len(neck["dilations"])
    inner = _inner_segmentor(cfg)
    if inner == "ENCNet":
        try:
            from .enc import enc_head_from_ssseg
        except ImportError:
            raise UnsupportedConfig("FastFCN with ENCNet needs the Enc head") from None
        decode = enc_head_from_ssseg(head, cfg, sel[-1])
        reads = head["in_channels_list"][-1]
    elif inner in ("Deeplabv3", "PSPNet"):
        if set(head) - {"jpu", "in_channels", "feats_channels", "dropout", "dilations", "pool_scales"}:
            raise UnsupportedConfig(f"FastFCN {inner} head options {sorted(head)} are not ported")
        decode = SSSEG_SEGMENTORS[inner].decode_head(cfg, sel)
        reads = head["in_channels"]
    else:
        raise UnsupportedConfig(f"FastFCN with {inner} is not ported (only Deeplabv3, PSPNet, ENCNet)")
    if int(reads) != width:
        raise UnsupportedConfig(f"FastFCN head reading {reads} channels of a {width}-channel JPU output")
    return {"type": "with_neck", "neck": neck, "head": decode}
