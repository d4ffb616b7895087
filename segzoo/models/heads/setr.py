"""SETR heads (SSSegmentation's ``SETRUP`` and ``SETRMLA``): progressive upsampling and multi-level
feature aggregation on a ViT's token maps.

* ``setr_up``: LayerNorm over the channels of one map, then ``num_convs`` x (ConvNormAct, bilinear
  upsampling by ``scale_factor``), then the classifier. SETR-Naive (1-2 convs, x4) and SETR-PUP
  (4 convs, x2) are its two settings, and the auxiliary heads of both SETR segmentors are ``setr_up``
  heads too (on SETR-UP each reads one of the other backbone maps through its own LayerNorm; on
  SETR-MLA each reads one MLA neck output, without a norm);
* ``setr_mla``: the MLA neck (LayerNorm per map, 1x1 projections, top-down running sums from the
  deepest map, one 3x3 conv each), per output two 3x3 convs and an upsampling, concatenated, then
  the classifier. :class:`~segzoo.models.segmentors.setr.SETRMLA` feeds the neck's outputs to the
  auxiliary heads.

The logits stay at the resolution the upsampling reaches (the reference's test path), which is the
(padded) input's for SETR-Naive on ADE20k/VOC and SETR-PUP, a quarter of it for SETR-Naive on Cityscapes.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..foreign import UnsupportedConfig, check_options, ssseg_segmentor
from ..layers import ConvNormAct
from .base import DecodeHead, register_head

__all__ = ["ChannelLayerNorm", "SETRUPHead", "SETRMLAHead", "up_from_ssseg", "mla_from_ssseg"]


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (each pixel a token)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = super().forward(x.reshape(n, c, h * w).transpose(1, 2))
        return x.transpose(1, 2).reshape(n, c, h, w)


def _upsample(x: torch.Tensor, scale_factor, align_corners: bool) -> torch.Tensor:
    """``nn.Upsample(scale_factor=..., mode="bilinear")``."""
    return F.interpolate(x, scale_factor=scale_factor, mode="bilinear", align_corners=align_corners)


@register_head("setr_up")
class SETRUPHead(DecodeHead):
    """``norm_eps=None``: no input norm. ``input_channels``: the width of the map the head reads when it
    is not the backbone's (SETR-MLA's auxiliary heads read the neck's outputs, ``in_index`` into them)."""

    def __init__(self, in_channels, num_classes, channels=256, num_convs=2, kernel_size=3, scale_factor=4,
                 in_index=-1, norm_eps: float | None = 1e-6, input_channels: int | None = None, dropout=0.0,
                 align_corners=False):
        if num_convs < 1:
            raise ValueError(f"setr_up needs num_convs >= 1, got {num_convs}")
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        if input_channels is not None:
            self.in_channels = int(input_channels)
        self.scale_factor = scale_factor
        self.norm = ChannelLayerNorm(self.in_channels, eps=norm_eps) if norm_eps is not None else nn.Identity()
        chans = [self.in_channels] + [channels] * num_convs
        self.convs = nn.ModuleList(ConvNormAct(chans[i], chans[i + 1], kernel_size) for i in range(num_convs))

    def forward(self, feats) -> torch.Tensor:
        x = self.norm(self.select(feats))
        for conv in self.convs:
            x = _upsample(conv(x), self.scale_factor, self.align_corners)
        return self.classify(x)


@register_head("setr_mla")
class SETRMLAHead(DecodeHead):
    """The classifier reads the concatenation of the upsampled maps: ``up_channels`` x the number of maps read."""

    def __init__(self, in_channels, num_classes, mla_channels=256, up_channels=128, scale_factor=4,
                 in_index=(0, 1, 2, 3), norm_eps: float = 1e-6, dropout=0.0, align_corners=False):
        in_index = list(in_index)
        super().__init__(in_channels, up_channels * len(in_index), num_classes, in_index, dropout, align_corners)
        self.scale_factor = scale_factor
        self.norms = nn.ModuleList(ChannelLayerNorm(c, eps=norm_eps) for c in self.in_channels)
        self.proj = nn.ModuleList(ConvNormAct(c, mla_channels, 1) for c in self.in_channels)
        self.fuse = nn.ModuleList(ConvNormAct(mla_channels, mla_channels, 3) for _ in self.in_channels)
        self.up = nn.ModuleList(nn.Sequential(ConvNormAct(mla_channels, up_channels, 3),
                                              ConvNormAct(up_channels, up_channels, 3)) for _ in self.in_channels)

    def neck(self, feats) -> list[torch.Tensor]:
        """The MLA neck's outputs, deepest first: output k is the k-th running sum of the projected maps
        taken from the deepest, through its 3x3 conv."""
        projected = [proj(norm(x)) for x, norm, proj in zip(self.select(feats), self.norms, self.proj)]
        outs, acc = [], None
        for x, fuse in zip(projected[::-1], self.fuse):
            acc = x if acc is None else acc + x
            outs.append(fuse(acc))
        return outs

    def decode(self, neck_outs) -> torch.Tensor:
        ups = [_upsample(up(x), self.scale_factor, self.align_corners) for x, up in zip(neck_outs, self.up)]
        return self.classify(torch.cat(ups, dim=1))

    def forward(self, feats) -> torch.Tensor:
        return self.decode(self.neck(feats))


# ---- SSSegmentation ---------------------------------------------------------------------------------
_AUX_OPTIONS = {"in_channels", "out_channels", "dropout", "num_convs", "kernel_size", "scale_factor"}


def _ln_eps(head: dict) -> float:
    norm = head.get("norm_cfg", {"type": "LayerNorm"})
    if norm.get("type") != "LayerNorm" or set(norm) - {"type", "eps"}:
        raise UnsupportedConfig(f"SETR head norm_cfg {norm} is not ported (only LayerNorm)")
    return float(norm.get("eps", 1e-5))


def _check_common(cfg: dict) -> None:
    if cfg.get("norm_cfg", {}).get("type") not in ("BatchNorm2d", "SyncBatchNorm"):
        raise UnsupportedConfig(f"SETR with norm_cfg {cfg.get('norm_cfg')} is not ported (only batch norm)")
    act = cfg.get("act_cfg", {"type": "ReLU"})
    if act.get("type") != "ReLU":
        raise UnsupportedConfig(f"SETR with act_cfg {act} is not ported (only ReLU)")


def _up_head(a: dict, num_convs_default: int = 2) -> dict:
    """An SSSegmentation SETR decoder config (``builddecoder``'s) -> a ``setr_up`` head's options."""
    num_convs = int(a.get("num_convs", num_convs_default))
    if num_convs < 1:
        raise UnsupportedConfig("SETR decoders with num_convs=0 are not ported")
    return {"type": "setr_up", "channels": int(a["out_channels"]), "num_convs": num_convs,
            "kernel_size": int(a["kernel_size"]), "scale_factor": a["scale_factor"], "dropout": float(a["dropout"])}


def _aux_cfgs(cfg: dict) -> list[dict]:
    aux = cfg.get("auxiliary") or []
    if not isinstance(aux, (list, tuple)):
        raise UnsupportedConfig("SETR needs a list of auxiliary decoders")
    for a in aux:
        check_options(a, _AUX_OPTIONS, "SETR auxiliary decoder")
    return list(aux)


@ssseg_segmentor("SETRUP", "setr_up", lambda arch: _up_rules(arch), aux_heads=lambda c, s: up_aux_from_ssseg(c, s))
def up_from_ssseg(cfg: dict, sel: list) -> dict:
    """SETR-Naive / SETR-PUP: one ``setr_up`` head on the last selected map."""
    _check_common(cfg)
    head = cfg["head"]
    check_options(head, {"in_channels_list", "feats_channels", "kernel_size", "scale_factor", "dropout", "num_convs",
                         "norm_cfg"}, "SETR-UP head")
    if len(head["in_channels_list"]) != len(sel):
        raise UnsupportedConfig("SETR-UP needs one head input per selected backbone output")
    out = _up_head({"out_channels": head["feats_channels"], **head})
    return {**out, "in_index": sel[-1], "norm_eps": _ln_eps(head)}


def up_aux_from_ssseg(cfg: dict, sel: list) -> list[dict]:
    """SETR-UP's auxiliary decoders: decoder k reads selected map k through LayerNorm k."""
    aux, eps = _aux_cfgs(cfg), _ln_eps(cfg["head"])
    if len(aux) != len(sel) - 1:  # otherwise some LayerNorms would sit unused in the checkpoint
        raise UnsupportedConfig(f"SETR-UP with {len(aux)} auxiliary decoders for {len(sel)} maps is not ported")
    return [{**_up_head(a), "in_index": sel[k], "norm_eps": eps} for k, a in enumerate(aux)]


def _decoder_rules(src: str, dst: str, num_convs: int) -> list[tuple[str, str]]:
    """SSSegmentation ``builddecoder``'s ``Sequential([conv, norm, act, upsample] * n, dropout, conv)``
    at ``src`` -> a ``setr_up`` head at ``dst``."""
    rules = []
    for i in range(num_convs):
        rules += [(rf"^{src}\.{4 * i}\.", f"{dst}.convs.{i}.conv."),
                  (rf"^{src}\.{4 * i + 1}\.", f"{dst}.convs.{i}.bn.")]
    return rules + [(rf"^{src}\.{4 * num_convs + 1}\.", f"{dst}.classifier.")]


def _aux_rules(arch: dict) -> list[tuple[str, str]]:
    return [r for k, h in enumerate(arch.get("aux_heads", ()))
            for r in _decoder_rules(rf"auxiliary_decoders\.{k}", f"aux_heads.{k}", h["num_convs"])]


def _up_rules(arch: dict) -> list[tuple[str, str]]:
    """``norm_layers.k`` -> the norm of the head reading map k (the auxiliary heads first, the decode head's last)."""
    n_aux = len(arch.get("aux_heads", ()))
    norms = [(rf"^norm_layers\.{k}\.", f"aux_heads.{k}.norm.") for k in range(n_aux)]
    norms.append((rf"^norm_layers\.{n_aux}\.", "decode_head.norm."))
    return norms + _decoder_rules("decoder", "decode_head", arch["decode_head"]["num_convs"]) + _aux_rules(arch)


@ssseg_segmentor("SETRMLA", "setr_mla", lambda arch: _MLA_RULES + _aux_rules(arch),
                 aux_heads=lambda c, s: mla_aux_from_ssseg(c, s))
def mla_from_ssseg(cfg: dict, sel: list) -> dict:
    """SETR-MLA: the ``setr_mla`` head on every selected map."""
    _check_common(cfg)
    head = cfg["head"]
    check_options(head, {"in_channels_list", "feats_channels", "mla_feats_channels", "mla_up_channels", "scale_factor",
                         "dropout", "norm_cfg"}, "SETR-MLA head")
    if len(head["in_channels_list"]) != len(sel):
        raise UnsupportedConfig("SETR-MLA needs one head input per selected backbone output")
    if int(head["mla_up_channels"]) * len(sel) != int(head["feats_channels"]):  # the reference asserts it
        raise UnsupportedConfig("SETR-MLA needs feats_channels == mla_up_channels x the number of maps")
    return {"type": "setr_mla", "in_index": list(sel), "mla_channels": int(head["mla_feats_channels"]),
            "up_channels": int(head["mla_up_channels"]),
            "scale_factor": head["scale_factor"], "dropout": float(head["dropout"]), "norm_eps": _ln_eps(head)}


def mla_aux_from_ssseg(cfg: dict, sel: list) -> list[dict]:
    """SETR-MLA's auxiliary decoders read the last MLA neck outputs (``in_index`` into the neck's outputs)."""
    aux, n = _aux_cfgs(cfg), len(sel)
    if len(aux) > n:
        raise UnsupportedConfig(f"SETR-MLA with {len(aux)} auxiliary decoders for {n} neck outputs is not ported")
    mla = int(cfg["head"]["mla_feats_channels"])
    return [{**_up_head(a), "in_index": n - len(aux) + k, "norm_eps": None, "input_channels": mla}
            for k, a in enumerate(aux)]


_MLA_RULES = [
    (r"^mla_neck\.norm_layers\.(\d+)\.", r"decode_head.norms.\1."),
    (r"^mla_neck\.mla\.channel_proj\.(\d+)\.0\.", r"decode_head.proj.\1.conv."),
    (r"^mla_neck\.mla\.channel_proj\.(\d+)\.1\.", r"decode_head.proj.\1.bn."),
    (r"^mla_neck\.mla\.feat_extract\.(\d+)\.0\.", r"decode_head.fuse.\1.conv."),
    (r"^mla_neck\.mla\.feat_extract\.(\d+)\.1\.", r"decode_head.fuse.\1.bn."),
    (r"^up_convs\.(\d+)\.0\.", r"decode_head.up.\1.0.conv."),
    (r"^up_convs\.(\d+)\.1\.", r"decode_head.up.\1.0.bn."),
    (r"^up_convs\.(\d+)\.3\.", r"decode_head.up.\1.1.conv."),
    (r"^up_convs\.(\d+)\.4\.", r"decode_head.up.\1.1.bn."),
    (r"^decoder\.1\.", "decode_head.classifier."),
]
