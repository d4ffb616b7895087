"""FCN head: a stack of 3x3 ConvNormAct then the classifier. Also the auxiliary head used in training."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..foreign import UnsupportedConfig, head_options, sequential_rules, ssseg_segmentor
from ..layers import ConvNormAct
from .base import DecodeHead, register_head


@register_head("fcn")
class FCNHead(DecodeHead):
    def __init__(self, in_channels, num_classes, channels=512, num_convs=2, kernel_size=3, in_index=-1,
                 dropout=0.1, align_corners=False):
        super().__init__(in_channels, channels if num_convs > 0 else in_channels[in_index], num_classes,
                         in_index, dropout, align_corners)
        chans = [self.in_channels] + [channels] * num_convs
        self.convs = nn.Sequential(*(ConvNormAct(chans[i], chans[i + 1], kernel_size) for i in range(num_convs)))

    def forward(self, feats) -> torch.Tensor:
        return self.classify(self.convs(self.select(feats)))


# ---- SSSegmentation ---------------------------------------------------------------------------------
@ssseg_segmentor("FCN", "fcn", lambda arch: sequential_rules("decoder", "decode_head", arch["decode_head"]["num_convs"]))
def from_ssseg(cfg: dict, sel: list) -> dict:
    return {"type": "fcn", "in_index": sel[-1], "num_convs": int(cfg["head"].get("num_convs", 2)), **head_options(cfg)}


_AUX_OPTIONS = {"in_channels", "out_channels", "dropout", "num_convs"}


def aux_from_ssseg(cfg: dict, sel: list) -> list[dict]:
    """SSSegmentation's ``auxiliary`` (one dict or a list; each an FCN conv stack) -> ``arch["aux_heads"]``,
    reading the backbone levels just before the decode head's."""
    aux_cfgs = cfg.get("auxiliary") or []
    if isinstance(aux_cfgs, dict):
        aux_cfgs = [aux_cfgs]
    aux_inputs = sel[:-1][-len(aux_cfgs):] if aux_cfgs else []
    aux = []
    for idx, a in zip(aux_inputs, aux_cfgs):
        if set(a) - _AUX_OPTIONS:
            raise UnsupportedConfig(f"auxiliary head options {sorted(a)} are not ported")
        aux.append({"type": "fcn", "in_index": idx, "channels": int(a["out_channels"]),
                    "num_convs": int(a.get("num_convs", 1)), "dropout": float(a.get("dropout", 0.1))})
    return aux


def aux_key_rules(arch: dict) -> list[tuple[str, str]]:
    """SSSegmentation's ``auxiliary_decoder`` (``auxiliary_decoder.k.`` when there are several) -> ``aux_heads.k``."""
    heads = arch.get("aux_heads", ())
    if len(heads) == 1:
        return sequential_rules("auxiliary_decoder", "aux_heads.0", heads[0]["num_convs"])
    return [r for k, h in enumerate(heads) for r in sequential_rules(rf"auxiliary_decoder\.{k}", f"aux_heads.{k}",
                                                                   h["num_convs"])]
