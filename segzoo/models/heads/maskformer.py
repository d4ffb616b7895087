"""MaskFormer head: a pixel decoder turns the backbone's levels into per-pixel mask embeddings at
the finest level; a transformer decoder turns ``num_queries`` learned queries, cross-attending to the
deepest level, into (class, mask embedding) pairs; each query's mask is the dot product of its
embedding with the per-pixel embeddings.

Two pixel decoders, one per reference:

* ``pixel_decoder="ppm_fpn"`` (SSSegmentation 1.7.0's ``MaskFormer``): pyramid pooling on the
  deepest level, then top-down bilinear upsampling + 1x1 lateral (BN, ReLU) + 3x3 (BN, ReLU);
* ``pixel_decoder="fpn"`` (the original MaskFormer and transformers' ``MaskFormerPixelDecoder``):
  a 3x3 (GN, ReLU) on the deepest level, then top-down nearest upsampling + 1x1 lateral (GN) +
  3x3 (GN, ReLU).

Both end in a 3x3 convolution to ``mask_channels``. The transformer decoder is DETR's post-norm
decoder with sine position embeddings on the memory and learned query positions (no encoder
layers: both references' configs have ``enc_layers=0``); a final LayerNorm normalises every
layer's output. ``forward`` returns ``pred_logits`` (N, Q, C + 1: the last class is "no object")
and ``pred_masks`` (N, Q, h, w), with ``aux_outputs`` (one dict per decoder layer but the last) in
training; ``segzoo.models.segmentors.maskformer`` turns them into semantic logits.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..foreign import UnsupportedConfig, check_options, ssseg_segmentor, transformers_segmentor
from ..layers import ConvNormAct, PyramidPooling, resize
from .base import DecodeHead, register_head
from .psp import ssseg_ppm_rules

__all__ = ["MaskFormerHead", "MaskPixelDecoder", "QueryDecoder", "sine_position_embedding"]


def sine_position_embedding(x: torch.Tensor, num_feats: int, temperature: float = 10000.0,
                            scale: float = 2 * math.pi, eps: float = 1e-6) -> torch.Tensor:
    """DETR's normalised sine position embedding of a (N, *, H, W) map: (N, 2 * num_feats, H, W),
    the y half first; float32."""
    n, _, h, w = x.shape
    y = torch.arange(1, h + 1, dtype=torch.float32, device=x.device)
    xs = torch.arange(1, w + 1, dtype=torch.float32, device=x.device)
    y = (y / (y[-1] + eps) * scale)[:, None].expand(h, w)
    xs = (xs / (xs[-1] + eps) * scale)[None, :].expand(h, w)
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)

    def encode(v):
        v = v[:, :, None] / dim_t
        return torch.stack((v[:, :, 0::2].sin(), v[:, :, 1::2].cos()), dim=3).flatten(2)
    return torch.cat((encode(y), encode(xs)), dim=2).permute(2, 0, 1).unsqueeze(0).expand(n, -1, -1, -1)


class _ConvGN(nn.Sequential):
    """Conv2d (no bias) -> GroupNorm(32) -> optional ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.gn = nn.GroupNorm(32, out_channels)
        if act:
            self.act = nn.ReLU(inplace=True)


class MaskPixelDecoder(nn.Module):
    """Top-down FPN over the levels ``in_channels`` (fine to coarse) -> per-pixel mask embeddings
    (N, mask_channels, h, w) at the finest level. ``laterals[k]`` / ``outputs[k]`` is the k-th step
    from the coarse end. ``kind``: "ppm_fpn" (SSSegmentation) or "fpn" (MaskFormer/transformers)."""

    def __init__(self, in_channels, channels: int, mask_channels: int, kind: str = "fpn", pool_scales=(1, 2, 3, 6),
                 align_corners: bool = False):
        super().__init__()
        if kind not in ("fpn", "ppm_fpn"):
            raise ValueError(f"pixel_decoder must be 'fpn' or 'ppm_fpn', got {kind!r}")
        self.kind, self.align_corners = kind, align_corners
        finer = list(in_channels[:-1])[::-1]
        if kind == "ppm_fpn":
            self.top = PyramidPooling(in_channels[-1], channels, pool_scales, align_corners)
            self.laterals = nn.ModuleList(ConvNormAct(c, channels, 1) for c in finer)
            self.outputs = nn.ModuleList(ConvNormAct(channels, channels, 3) for _ in finer)
        else:
            self.top = _ConvGN(in_channels[-1], channels, 3)
            self.laterals = nn.ModuleList(_ConvGN(c, channels, 1, act=False) for c in finer)
            self.outputs = nn.ModuleList(_ConvGN(channels, channels, 3) for _ in finer)
        self.mask_features = nn.Conv2d(channels, mask_channels, 3, padding=1)

    def forward(self, xs) -> torch.Tensor:
        out = self.top(xs[-1])
        for lateral, conv, x in zip(self.laterals, self.outputs, list(xs[:-1])[::-1]):
            x = lateral(x)
            if self.kind == "fpn":
                out = F.interpolate(out, size=x.shape[-2:], mode="nearest")
            else:
                out = resize(out, x.shape[-2:], self.align_corners)
            out = conv(out + x)
        return self.mask_features(out)


class _DecoderLayer(nn.Module):
    """DETR decoder layer, post-norm: self-attention (query positions on queries and keys),
    cross-attention (query positions on queries, memory positions on keys), ReLU MLP."""

    def __init__(self, dim: int, num_heads: int, ffn_channels: int, dropout: float, attn_dropout: float,
                 ffn_dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=attn_dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, dropout=attn_dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_channels)
        self.fc2 = nn.Linear(ffn_channels, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout, self.ffn_dropout = nn.Dropout(dropout), nn.Dropout(ffn_dropout)

    def forward(self, tgt, memory, pos, query_pos):
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout(self.self_attn(q, q, tgt, need_weights=False)[0]))
        tgt = self.norm2(tgt + self.dropout(self.cross_attn(tgt + query_pos, memory + pos, memory,
                                                            need_weights=False)[0]))
        return self.norm3(tgt + self.dropout(self.fc2(self.ffn_dropout(F.relu(self.fc1(tgt))))))


class QueryDecoder(nn.Module):
    """``num_queries`` learned queries through ``num_layers`` decoder layers over a (N, C, H, W)
    memory; returns every layer's output through the final LayerNorm (``all_layers``) or the last."""

    def __init__(self, dim: int, num_queries: int, num_heads: int, num_layers: int, ffn_channels: int,
                 dropout: float, attn_dropout: float, ffn_dropout: float):
        super().__init__()
        self.query_embed = nn.Embedding(num_queries, dim)
        self.layers = nn.ModuleList(_DecoderLayer(dim, num_heads, ffn_channels, dropout, attn_dropout, ffn_dropout)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        for p in self.layers.parameters():  # SSSegmentation's initialisation (xavier on the layers' matrices)
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, memory: torch.Tensor, all_layers: bool = False) -> list[torch.Tensor]:
        n, c = memory.shape[:2]
        pos = sine_position_embedding(memory, c // 2).to(memory.dtype).flatten(2).transpose(1, 2)
        memory = memory.flatten(2).transpose(1, 2)
        query_pos = self.query_embed.weight.unsqueeze(0).expand(n, -1, -1)
        tgt = torch.zeros_like(query_pos)
        outs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos)
            if all_layers:
                outs.append(self.norm(tgt))
        return outs if all_layers else [self.norm(tgt)]


@register_head("maskformer")
class MaskFormerHead(DecodeHead):
    """MaskFormer's pixel decoder + transformer decoder + class and mask predictors (see the module
    docstring). ``semantic_at`` tells the segmentor how the reference combines the predictions into
    semantic logits: "input" (masks resized to the input first: SSSegmentation, the original
    MaskFormer) or "masks" (at the mask resolution: transformers' post-processing). ``criterion``:
    the options of ``segzoo.train.mask_classification.MaskClassificationCriterion`` (training only)."""

    def __init__(self, in_channels, num_classes, channels: int = 256, mask_channels: int = 256,
                 pixel_decoder: str = "fpn", pool_scales=(1, 2, 3, 6), hidden_dim: int = 256, num_queries: int = 100,
                 num_heads: int = 8, num_layers: int = 6, ffn_channels: int = 2048, dropout: float = 0.1,
                 attn_dropout: float = 0.0, ffn_dropout: float = 0.0, enforce_input_proj: bool = False,
                 semantic_at: str = "masks", criterion: dict | None = None, in_index=(0, 1, 2, 3),
                 align_corners: bool = False):
        super().__init__(in_channels, channels, num_classes, list(in_index), 0.0, align_corners)
        if semantic_at not in ("input", "masks"):
            raise ValueError(f"semantic_at must be 'input' or 'masks', got {semantic_at!r}")
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        chans = self.in_channels
        self.semantic_at = semantic_at
        # GroupNorm(32) of one channel per group needs more than one cell on the deepest level
        self.min_feature_size = 2 if pixel_decoder == "fpn" and channels < 64 else 1
        self.criterion_cfg = dict(criterion or {})
        self.pixel_decoder = MaskPixelDecoder(chans, channels, mask_channels, pixel_decoder, pool_scales, align_corners)
        self.input_proj = (nn.Conv2d(chans[-1], hidden_dim, 1) if chans[-1] != hidden_dim or enforce_input_proj
                           else nn.Identity())
        self.transformer = QueryDecoder(hidden_dim, num_queries, num_heads, num_layers, ffn_channels, dropout,
                                        attn_dropout, ffn_dropout)
        self.classifier = nn.Linear(hidden_dim, num_classes + 1)  # + "no object"
        self.mask_embed = nn.ModuleList(nn.Linear(hidden_dim, d) for d in (hidden_dim, hidden_dim, mask_channels))

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features - 1

    def _embed(self, q: torch.Tensor) -> torch.Tensor:
        for i, fc in enumerate(self.mask_embed):
            q = fc(q) if i == len(self.mask_embed) - 1 else F.relu(fc(q))
        return q

    def _predict(self, q: torch.Tensor, mask_features: torch.Tensor) -> dict:
        return {"pred_logits": self.classifier(q),
                "pred_masks": torch.einsum("bqc,bchw->bqhw", self._embed(q), mask_features)}

    def forward(self, feats) -> dict:
        xs = self.select(feats)
        mask_features = self.pixel_decoder(xs)
        qs = self.transformer(self.input_proj(xs[-1]), all_layers=self.training)
        out = self._predict(qs[-1], mask_features)
        if self.training:
            out["aux_outputs"] = [self._predict(q, mask_features) for q in qs[:-1]]
        return out


# ---- SSSegmentation -----------------------------------------------------------------------------------
_P = "decoder_predictor."


def _ssseg_rules(arch: dict) -> list[tuple[str, str]]:
    n = len(arch["decode_head"]["in_index"]) - 1  # lateral levels; SSSeg numbers them fine to coarse
    dst = "decode_head.pixel_decoder"
    rules = ssseg_ppm_rules(f"{dst}.top")
    for i in range(n):
        rules += [(rf"^lateral_convs\.{i}\.0\.", f"{dst}.laterals.{n - 1 - i}.conv."),
                  (rf"^lateral_convs\.{i}\.1\.", f"{dst}.laterals.{n - 1 - i}.bn.")]
    rules += [(r"^fpn_convs\.(\d+)\.0\.", rf"{dst}.outputs.\1.conv."),
              (r"^fpn_convs\.(\d+)\.1\.", rf"{dst}.outputs.\1.bn."), (r"^decoder_mask\.0\.", f"{dst}.mask_features.")]
    layer = _P + r"transformer\.decoder\.layers\.(\d+)\."
    rules += [(layer + "self_attn.", r"decode_head.transformer.layers.\1.self_attn."),
              (layer + "multihead_attn.", r"decode_head.transformer.layers.\1.cross_attn."),
              (layer + r"linear(\d)\.", r"decode_head.transformer.layers.\1.fc\2."),
              (layer, r"decode_head.transformer.layers.\1."),
              (rf"^{_P}transformer\.decoder\.norm\.", "decode_head.transformer.norm."),
              (rf"^{_P}query_embed\.", "decode_head.transformer.query_embed."),
              (rf"^{_P}input_proj\.", "decode_head.input_proj."),
              (rf"^{_P}class_embed\.", "decode_head.classifier."),
              (rf"^{_P}mask_embed\.layers\.", "decode_head.mask_embed.")]
    return [(p if p.startswith("^") else "^" + p, r) for p, r in rules]


@ssseg_segmentor("MaskFormer", "maskformer", _ssseg_rules)
def from_ssseg(cfg: dict, sel: list) -> dict:
    head, pred = cfg["head"], cfg["head"]["predictor"]
    check_options(head, {"feats_channels", "in_channels_list", "mask_feats_channels", "matcher", "pool_scales",
                         "predictor"}, "MaskFormer head")
    check_options(pred, {"act_cfg", "dec_layers", "deep_supervision", "dim_feedforward", "dropout", "enc_layers",
                         "enforce_input_project", "hidden_dim", "in_channels", "mask_classification", "mask_dim",
                         "nheads", "norm_cfg", "num_classes", "num_queries", "pre_norm"}, "MaskFormer predictor")
    if int(pred.get("enc_layers", 0)) != 0:
        raise UnsupportedConfig("MaskFormer predictor with transformer encoder layers is not ported")
    if pred.get("pre_norm") or not pred.get("mask_classification", True):
        raise UnsupportedConfig("MaskFormer predictor with pre_norm or without mask classification is not ported")
    for key, want in (("act_cfg", "ReLU"), ("norm_cfg", "LayerNorm")):
        if (pred.get(key) or {"type": want})["type"] != want:
            raise UnsupportedConfig(f"MaskFormer predictor {key} {pred[key]} is not ported (only {want})")
    if cfg.get("act_cfg", {"type": "ReLU"})["type"] != "ReLU":
        raise UnsupportedConfig(f"MaskFormer act_cfg {cfg['act_cfg']} is not ported (only ReLU)")
    if len(sel) < 2:
        raise UnsupportedConfig("MaskFormer needs at least two backbone levels")
    dropout = float(pred.get("dropout", 0.1))
    matcher = head.get("matcher") or {}
    return {"type": "maskformer", "in_index": list(sel), "pixel_decoder": "ppm_fpn",
            "channels": int(head["feats_channels"]), "mask_channels": int(head["mask_feats_channels"]),
            "pool_scales": list(head["pool_scales"]), "hidden_dim": int(pred["hidden_dim"]),
            "num_queries": int(pred["num_queries"]), "num_heads": int(pred["nheads"]),
            "num_layers": int(pred["dec_layers"]), "ffn_channels": int(pred["dim_feedforward"]),
            "dropout": dropout, "attn_dropout": dropout, "ffn_dropout": dropout,
            "enforce_input_proj": bool(pred.get("enforce_input_project", False)), "semantic_at": "input",
            "criterion": {"cost_class": float(matcher.get("cost_class", 1.0)),
                          "cost_mask": float(matcher.get("cost_mask", 1.0)),
                          "cost_dice": float(matcher.get("cost_dice", 1.0)), "eos_coef": 0.1, "num_points": 0,
                          "deep_supervision": bool(pred.get("deep_supervision", True))}}


# ---- transformers (MaskFormerForInstanceSegmentation) ----------------------------------------------------
_FPN = r"^model\.pixel_level_module\.decoder\."
_DEC = r"^model\.transformer_module\.decoder\.layers\.(\d+)\."
_OUR = r"decode_head.transformer.layers.\1."
_HF_HEAD_RULES = [
    (_FPN + r"fpn\.stem\.0\.", "decode_head.pixel_decoder.top.conv."),
    (_FPN + r"fpn\.stem\.1\.", "decode_head.pixel_decoder.top.gn."),
    (_FPN + r"fpn\.layers\.(\d+)\.proj\.0\.", r"decode_head.pixel_decoder.laterals.\1.conv."),
    (_FPN + r"fpn\.layers\.(\d+)\.proj\.1\.", r"decode_head.pixel_decoder.laterals.\1.gn."),
    (_FPN + r"fpn\.layers\.(\d+)\.block\.0\.", r"decode_head.pixel_decoder.outputs.\1.conv."),
    (_FPN + r"fpn\.layers\.(\d+)\.block\.1\.", r"decode_head.pixel_decoder.outputs.\1.gn."),
    (_FPN + r"mask_projection\.", "decode_head.pixel_decoder.mask_features."),
    (r"^model\.transformer_module\.queries_embedder\.", "decode_head.transformer.query_embed."),
    (r"^model\.transformer_module\.input_projection\.", "decode_head.input_proj."),
    (r"^model\.transformer_module\.decoder\.layernorm\.", "decode_head.transformer.norm."),
    (_DEC + r"self_attn\.(?:o_proj|out_proj)\.", _OUR + "self_attn.out_proj."),
    (_DEC + r"encoder_attn\.(?:o_proj|out_proj)\.", _OUR + "cross_attn.out_proj."),
    (_DEC + r"self_attn_layer_norm\.", _OUR + "norm1."),
    (_DEC + r"encoder_attn_layer_norm\.", _OUR + "norm2."),
    (_DEC + r"final_layer_norm\.", _OUR + "norm3."),
    (_DEC + r"(?:mlp\.)?fc(\d)\.", _OUR + r"fc\2."),
    (r"^class_predictor\.", "decode_head.classifier."),
    (r"^mask_embedder\.(\d+)\.0\.", r"decode_head.mask_embed.\1."),
]
_HF_QKV = re.compile(r"^model\.transformer_module\.decoder\.layers\.(\d+)\.(self_attn|encoder_attn)\.([qkv])_proj\."
                     r"(weight|bias)$")
_HF_BACKBONE = "model.pixel_level_module.encoder."


@transformers_segmentor("maskformer")
def from_transformers(sd: dict, arch: dict) -> tuple[dict, dict]:
    """A ``MaskFormerForInstanceSegmentation`` state dict (the Hub files' names, or the installed
    transformers' ``o_proj`` / ``mlp.fc1``): the Swin backbone's keys in ``SwinBackbone`` names (for
    ``segzoo.models.backbones.swin.convert_transformers``) and the head's in segzoo's; the separate
    q/k/v projections are concatenated into ``in_proj_weight`` / ``in_proj_bias``."""
    backbone, rest, qkv = {}, {}, {}
    for key, value in sd.items():
        if key.startswith(_HF_BACKBONE):
            k = key[len(_HF_BACKBONE):]
            m = re.match(r"^hidden_states_norms\.(\d+)\.(.*)$", k)
            k = f"hidden_states_norms.stage{int(m.group(1)) + 1}.{m.group(2)}" if m else k
            backbone[k[len("model."):] if k.startswith("model.") else k] = value
            continue
        m = _HF_QKV.match(key)
        if m:
            attn = "self_attn" if m.group(2) == "self_attn" else "cross_attn"
            qkv.setdefault((int(m.group(1)), attn, m.group(4)), {})[m.group(3)] = value
            continue
        for pattern, repl in _HF_HEAD_RULES:
            new, n = re.subn(pattern, repl, key)
            if n:
                key = new
                break
        rest[key] = value
    for (i, attn, kind), parts in qkv.items():
        target = f"decode_head.transformer.layers.{i}.{attn}.in_proj_{kind}"
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"transformers MaskFormer checkpoint lacks a q/k/v projection for {target}")
        rest[target] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    if "criterion.empty_weight" not in rest and "decode_head.classifier.weight" in rest:
        # a file without the criterion's class weights: those of the record's criterion options
        weight = torch.ones(rest["decode_head.classifier.weight"].shape[0])
        weight[-1] = float(arch["decode_head"].get("criterion", {}).get("eos_coef", 0.1))
        rest["criterion.empty_weight"] = weight
    return backbone, rest
