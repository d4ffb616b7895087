"""Mask2Former head: a multi-scale deformable-attention pixel decoder, then a masked-attention
transformer decoder whose queries each predict a class (with a "no object" class) and a mask.

The pixel decoder (:class:`MSDeformPixelDecoder`) refines the three coarsest backbone levels with
deformable self-attention encoder layers and adds FPN levels down to ``common_stride``; its finest
map, through a 1x1 conv, is the mask feature map. The decoder (:class:`Mask2FormerHead`) runs its
layers round-robin over the three refined levels, each layer cross-attending only where the previous
layer's mask predicted foreground (the masked attention), then self-attending, then an FFN.

Both references compute this network: SSSegmentation's ``Mask2Former`` (detectron2's) and
transformers' ``Mask2FormerForUniversalSegmentation``; they differ only in the semantic inference
(``mask_size``, see ``segzoo.models.segmentors.mask2former``). SSSegmentation runs the pixel
decoder in float32 with autocast off; so does this one (in the parameters' dtype).

Blocks MaskFormer shares (its transformer decoder layers are DETR's: self-attention, then
cross-attention, then FFN): :class:`AttentionBlock`, :class:`FFNBlock`, :class:`MLP`,
:func:`sine_position_embedding`.
"""
from __future__ import annotations

import contextlib
import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..foreign import UnsupportedConfig, check_options, ssseg_segmentor, transformers_segmentor
from .base import DecodeHead, register_head
from .msdeform_attn import MSDeformAttn

__all__ = ["Mask2FormerHead", "MSDeformPixelDecoder", "AttentionBlock", "FFNBlock", "MLP", "ConvGN",
           "sine_position_embedding"]


# ---- shared blocks ------------------------------------------------------------------------------------
def sine_position_embedding(x: torch.Tensor, num_feats: int, temperature: float = 10000.0,
                            scale: float = 2 * math.pi, eps: float = 1e-6) -> torch.Tensor:
    """DETR's normalised sine position embedding of a (N, C, h, w) map's grid: (N, 2 * num_feats, h, w),
    the y embedding's channels first, each interleaving sin and cos. Computed in float32 (float64 for
    float64 maps), returned in ``x``'s dtype."""
    n, _, h, w = x.shape
    dtype = torch.promote_types(x.dtype, torch.float32)
    y = torch.arange(1, h + 1, dtype=dtype, device=x.device) / (h + eps) * scale
    xs = torch.arange(1, w + 1, dtype=dtype, device=x.device) / (w + eps) * scale
    dim_t = torch.arange(num_feats, dtype=dtype, device=x.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)

    def embed(v):  # (L,) -> (L, num_feats): sin on even, cos on odd channels, interleaved
        v = v[:, None] / dim_t
        return torch.stack((v[:, 0::2].sin(), v[:, 1::2].cos()), dim=2).flatten(1)
    pos_y = embed(y)[:, None, :].expand(h, w, num_feats)
    pos_x = embed(xs)[None, :, :].expand(h, w, num_feats)
    pos = torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)
    return pos[None].expand(n, -1, -1, -1).to(x.dtype)


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class AttentionBlock(nn.Module):
    """Residual multi-head attention + LayerNorm (post-norm, or pre-norm with ``pre_norm``) on
    sequence-first (L, N, C) tensors. ``forward(x, memory=None, ...)``: self-attention when ``memory``
    is None (queries and keys get ``query_pos``), else cross-attention (keys get ``pos``; values are
    the memory without it). ``attn_mask``: nn.MultiheadAttention's (True = not attended)."""

    def __init__(self, dim: int, num_heads: int, pre_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None, pos: torch.Tensor | None = None,
                query_pos: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm(x) if self.pre_norm else x
        if memory is None:
            key, value = _with_pos(y, query_pos), y
        else:
            key, value = _with_pos(memory, pos), memory
        out = self.attn(_with_pos(y, query_pos), key, value, attn_mask=attn_mask, need_weights=False)[0]
        x = x + self.dropout(out)
        return x if self.pre_norm else self.norm(x)


class FFNBlock(nn.Module):
    """Residual two-layer ReLU MLP + LayerNorm (post-norm, or pre-norm with ``pre_norm``)."""

    def __init__(self, dim: int, hidden: int, pre_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x) if self.pre_norm else x
        x = x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(y)))))
        return x if self.pre_norm else self.norm(x)


class MLP(nn.Module):
    """``num_layers`` Linear layers, ReLU between them (DETR's box / mask embedding MLP)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int = 3):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class ConvGN(nn.Sequential):
    """Conv2d -> GroupNorm(32) (-> ReLU with ``act``), the pixel decoders' convolutions."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, bias: bool = False,
                 act: bool = False, groups: int = 32):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.norm = nn.GroupNorm(groups, out_channels)
        if act:
            self.act = nn.ReLU(inplace=True)


def _no_autocast(device: torch.device):
    if device.type in ("cuda", "cpu", "xpu", "mps"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


# ---- pixel decoder ---------------------------------------------------------------------------------
class MSDeformEncoderLayer(nn.Module):
    """Deformable self-attention over all levels' tokens, then an FFN; post-norm."""

    def __init__(self, dim: int, ffn_dim: int, num_levels: int, num_heads: int, num_points: int):
        super().__init__()
        self.attn = MSDeformAttn(dim, num_levels, num_heads, num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x, pos, reference_points, shapes):
        x = self.norm1(x + self.attn(x + pos, reference_points, x, shapes))
        return self.norm2(x + self.fc2(F.relu(self.fc1(x))))


class MSDeformPixelDecoder(nn.Module):
    """``forward(feats)`` on the backbone levels (finest first, strides ``strides``) -> (mask features
    (N, mask_dim, H/common_stride, W/common_stride), the three refined coarsest levels, coarsest
    first, for the transformer decoder)."""

    num_levels = 3  # the deformable encoder reads the three coarsest levels (both references)

    def __init__(self, in_channels, strides=(4, 8, 16, 32), channels: int = 256, mask_dim: int = 256,
                 num_layers: int = 6, num_heads: int = 8, ffn_channels: int = 1024, num_points: int = 4,
                 common_stride: int = 4):
        super().__init__()
        in_channels, strides = list(in_channels), list(strides)
        if len(in_channels) != len(strides) or len(in_channels) < self.num_levels:
            raise ValueError(f"the pixel decoder needs >= {self.num_levels} levels with one stride each, got "
                             f"in_channels={in_channels}, strides={strides}")
        levels = in_channels[-self.num_levels:]
        self.input_proj = nn.ModuleList(ConvGN(c, channels, 1, bias=True) for c in levels[::-1])
        self.level_embed = nn.Parameter(torch.randn(self.num_levels, channels))
        self.layers = nn.ModuleList(MSDeformEncoderLayer(channels, ffn_channels, self.num_levels, num_heads, num_points)
                                    for _ in range(num_layers))
        self.mask_features = nn.Conv2d(channels, mask_dim, 1)
        self.num_fpn_levels = int(math.log2(min(strides[-self.num_levels:])) - math.log2(common_stride))
        fpn = in_channels[:self.num_fpn_levels][::-1]  # coarsest first (top-down)
        self.lateral_convs = nn.ModuleList(ConvGN(c, channels, 1) for c in fpn)
        self.output_convs = nn.ModuleList(ConvGN(channels, channels, 3, act=True) for _ in fpn)

    @staticmethod
    def reference_points(shapes, n: int, device, dtype) -> torch.Tensor:
        """(N, S, L, 2): every token's cell centre, (x, y) in [0, 1] of its map, the same on every level."""
        refs = []
        for h, w in shapes:
            ry, rx = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, dtype=dtype, device=device) / h,
                                    torch.linspace(0.5, w - 0.5, w, dtype=dtype, device=device) / w, indexing="ij")
            refs.append(torch.stack((rx.reshape(-1), ry.reshape(-1)), -1))
        return torch.cat(refs, 0)[None, :, None, :].expand(n, -1, len(shapes), -1)

    def forward(self, feats):
        with _no_autocast(feats[0].device):
            feats = [f.to(self.level_embed.dtype) for f in feats]
            deep = feats[-self.num_levels:][::-1]  # coarsest first
            srcs = [proj(f) for proj, f in zip(self.input_proj, deep)]
            shapes = [tuple(s.shape[-2:]) for s in srcs]
            n, c = srcs[0].shape[:2]
            x = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
            pos = torch.cat([sine_position_embedding(f, c // 2).flatten(2).transpose(1, 2) + self.level_embed[i]
                             for i, f in enumerate(deep)], 1)
            refs = self.reference_points(shapes, n, x.device, x.dtype)
            for layer in self.layers:
                x = layer(x, pos, refs, shapes)
            outs = [t.transpose(1, 2).reshape(n, c, h, w)
                    for t, (h, w) in zip(x.split([h * w for h, w in shapes], 1), shapes)]
            for lateral, output, f in zip(self.lateral_convs, self.output_convs,
                                          feats[:self.num_fpn_levels][::-1]):
                y = lateral(f)
                y = y + F.interpolate(outs[-1], size=y.shape[-2:], mode="bilinear", align_corners=False)
                outs.append(output(y))
            return self.mask_features(outs[-1]), outs[:self.num_levels]


# ---- transformer decoder and head -------------------------------------------------------------------
class MaskedDecoderLayer(nn.Module):
    """Masked cross-attention to one pixel-decoder level, self-attention among the queries, FFN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, pre_norm: bool):
        super().__init__()
        self.cross_attn = AttentionBlock(dim, num_heads, pre_norm)
        self.self_attn = AttentionBlock(dim, num_heads, pre_norm)
        self.ffn = FFNBlock(dim, ffn_dim, pre_norm)

    def forward(self, q, memory, pos, query_pos, attn_mask):
        q = self.cross_attn(q, memory, pos=pos, query_pos=query_pos, attn_mask=attn_mask)
        return self.ffn(self.self_attn(q, query_pos=query_pos))


@register_head("mask2former")
class Mask2FormerHead(DecodeHead):
    """``forward(feats)`` -> ``{"pred_logits": (N, Q, C + 1), "pred_masks": (N, Q, H/4, W/4),
    "aux_outputs": [{"pred_logits", "pred_masks"}] * num_layers}``: the last layer's predictions and,
    first to last, those made before each decoder layer (from the learnt queries, then after each
    layer but the last; training only). Class logits' last column is "no object"; ``classifier`` is
    the Linear that predicts them.

    ``mask_size``: the size the masks are resized to for the semantic inference (see
    ``segzoo.models.segmentors.mask2former``): None for the input size (SSSegmentation,
    detectron2), ``[384, 384]`` for transformers' ``post_process_semantic_segmentation``.
    ``criterion``: the options of ``segzoo.train.mask_classification.MaskClassificationCriterion``
    (training only; the segmentor builds it)."""

    def __init__(self, in_channels, num_classes, channels: int = 256, in_index=(0, 1, 2, 3), strides=(4, 8, 16, 32),
                 pixel_decoder: dict | None = None, num_queries: int = 100, num_heads: int = 8,
                 ffn_channels: int = 2048, num_layers: int = 9, pre_norm: bool = False, mask_channels: int = 256,
                 enforce_input_proj: bool = False, mask_size=None, criterion: dict | None = None,
                 dropout: float = 0.0, align_corners: bool = False):
        super().__init__(in_channels, channels, num_classes, list(in_index), 0.0, align_corners)
        if dropout:
            raise ValueError("the Mask2Former head has no dropout before its class head")
        pd = dict(pixel_decoder or {})
        pd_channels = int(pd.pop("channels", 256))
        self.pixel_decoder = MSDeformPixelDecoder(self.in_channels, strides, channels=pd_channels,
                                                  mask_dim=mask_channels, **pd)
        levels = MSDeformPixelDecoder.num_levels
        self.num_heads = num_heads
        self.mask_size = None if mask_size is None else tuple(int(s) for s in mask_size)
        proj = pd_channels != channels or enforce_input_proj
        self.input_proj = nn.ModuleList(nn.Conv2d(pd_channels, channels, 1) if proj else nn.Identity()
                                        for _ in range(levels))
        self.level_embed = nn.Embedding(levels, channels)
        self.query_feat = nn.Embedding(num_queries, channels)
        self.query_embed = nn.Embedding(num_queries, channels)
        self.layers = nn.ModuleList(MaskedDecoderLayer(channels, num_heads, ffn_channels, pre_norm)
                                    for _ in range(num_layers))
        self.decoder_norm = nn.LayerNorm(channels)
        self.classifier = nn.Linear(channels, num_classes + 1)  # + "no object"
        self.mask_embed = MLP(channels, channels, mask_channels, 3)
        self.criterion_cfg = dict(criterion or {})

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features - 1

    def _predict(self, q: torch.Tensor, mask_features: torch.Tensor, attn_size, with_class: bool):
        out = self.decoder_norm(q).transpose(0, 1)  # (N, Q, C)
        logits = self.classifier(out) if with_class else None
        masks = torch.einsum("nqc,nchw->nqhw", self.mask_embed(out), mask_features)
        attn = F.interpolate(masks, size=attn_size, mode="bilinear", align_corners=False)
        # True: not attended; (N * heads, Q, h * w), batch-major as nn.MultiheadAttention expects
        attn = (attn.sigmoid().flatten(2) < 0.5).repeat_interleave(self.num_heads, dim=0).detach()
        return logits, masks, attn

    def forward(self, feats) -> dict:
        mask_features, levels = self.pixel_decoder(self.select(feats))
        srcs, pos, sizes = [], [], []
        for i, x in enumerate(levels):
            sizes.append(tuple(x.shape[-2:]))
            pos.append(sine_position_embedding(x, self.level_embed.embedding_dim // 2).flatten(2).permute(2, 0, 1))
            srcs.append((self.input_proj[i](x).flatten(2) + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1))
        n = mask_features.shape[0]
        query_pos = self.query_embed.weight[:, None].expand(-1, n, -1)
        q = self.query_feat.weight[:, None].expand(-1, n, -1)
        train = self.training
        logits, masks, attn = self._predict(q, mask_features, sizes[0], train)
        aux = []
        for i, layer in enumerate(self.layers):
            aux.append({"pred_logits": logits, "pred_masks": masks})
            attn = attn & ~attn.all(-1, keepdim=True)  # a query masked everywhere attends everywhere
            lvl = i % len(levels)
            q = layer(q, srcs[lvl], pos[lvl], query_pos, attn)
            last = i == len(self.layers) - 1
            logits, masks, attn = self._predict(q, mask_features, sizes[(i + 1) % len(levels)], train or last)
        return {"pred_logits": logits, "pred_masks": masks, "aux_outputs": aux if train else []}


# ---- SSSegmentation ---------------------------------------------------------------------------------
_PD, _PR = "decode_head.pixel_decoder.", "decode_head."
_SSSEG_RULES = [
    (r"^pixel_decoder\.input_proj\.(\d+)\.0\.", _PD + r"input_proj.\1.conv."),
    (r"^pixel_decoder\.input_proj\.(\d+)\.1\.", _PD + r"input_proj.\1.norm."),
    (r"^pixel_decoder\.transformer\.level_embed$", _PD + "level_embed"),
    (r"^pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.self_attn\.", _PD + r"layers.\1.attn."),
    (r"^pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.linear(\d)\.", _PD + r"layers.\1.fc\2."),
    (r"^pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.norm(\d)\.", _PD + r"layers.\1.norm\2."),
    (r"^pixel_decoder\.mask_features\.", _PD + "mask_features."),
    (r"^pixel_decoder\.(lateral|output)_convs\.(\d+)\.0\.", _PD + r"\1_convs.\2.conv."),
    (r"^pixel_decoder\.(lateral|output)_convs\.(\d+)\.1\.", _PD + r"\1_convs.\2.norm."),
    (r"^predictor\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.", _PR + r"layers.\1.cross_attn.attn."),
    (r"^predictor\.transformer_cross_attention_layers\.(\d+)\.norm\.", _PR + r"layers.\1.cross_attn.norm."),
    (r"^predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.", _PR + r"layers.\1.self_attn.attn."),
    (r"^predictor\.transformer_self_attention_layers\.(\d+)\.norm\.", _PR + r"layers.\1.self_attn.norm."),
    (r"^predictor\.transformer_ffn_layers\.(\d+)\.", _PR + r"layers.\1.ffn."),
    (r"^predictor\.(decoder_norm|query_feat|query_embed|level_embed|input_proj|mask_embed)\.", _PR + r"\1."),
    (r"^predictor\.class_embed\.", _PR + "classifier."),
]  # criterion.empty_weight: the segmentor's criterion holds it under the same name

_PIXEL_DECODER_OPTIONS = {"input_shape", "transformer_dropout", "transformer_nheads", "transformer_dim_feedforward",
                          "transformer_enc_layers", "conv_dim", "mask_dim", "norm_cfg", "act_cfg",
                          "transformer_in_features", "common_stride"}
_PREDICTOR_OPTIONS = {"in_channels", "hidden_dim", "num_queries", "nheads", "dim_feedforward", "dec_layers", "pre_norm",
                      "mask_dim", "enforce_input_project", "mask_classification"}


@ssseg_segmentor("Mask2Former", "mask2former", _SSSEG_RULES)
def from_ssseg(cfg: dict, sel: list) -> dict:
    head = cfg["head"]
    check_options(head, {"pixel_decoder", "predictor", "matcher", "criterion", "deep_supervision"}, "Mask2Former head")
    pd, pr = head["pixel_decoder"], head["predictor"]
    check_options(pd, _PIXEL_DECODER_OPTIONS, "Mask2Former pixel decoder")
    check_options(pr, _PREDICTOR_OPTIONS, "Mask2Former predictor")
    if len(sel) != 4 or list(pd["input_shape"]["strides"]) != [4, 8, 16, 32]:
        raise UnsupportedConfig("Mask2Former needs four backbone levels of strides 4, 8, 16, 32")
    if list(pd["transformer_in_features"]) != ["res3", "res4", "res5"]:
        raise UnsupportedConfig(f"Mask2Former pixel decoder on {pd['transformer_in_features']} is not ported "
                                "(only res3-res5)")
    if float(pd.get("transformer_dropout", 0.0)) != 0.0:
        raise UnsupportedConfig("Mask2Former pixel decoder dropout is not ported")
    norm, act = pd.get("norm_cfg") or {}, pd.get("act_cfg") or {}
    if norm.get("type") != "GroupNorm" or int(norm.get("num_groups", 32)) != 32 or act.get("type") != "ReLU":
        raise UnsupportedConfig(f"Mask2Former pixel decoder with norm {norm} / activation {act} is not ported "
                                "(only GroupNorm(32), ReLU)")
    matcher, crit = head["matcher"], head["criterion"]
    sampler = crit["pixelsampler_cfg"]
    check_options(crit, {"eos_coef", "losses", "pixelsampler_cfg"}, "Mask2Former criterion")
    check_options(matcher, {"cost_class", "cost_mask", "cost_dice", "num_points"}, "Mask2Former matcher")
    if sorted(crit.get("losses", [])) != ["labels", "masks"] or sampler.get("type") != "UGSampler":
        raise UnsupportedConfig(f"Mask2Former criterion {crit} is not ported (only the labels and masks losses "
                                "on UGSampler points)")
    if not pr.get("mask_classification", True) or int(pr["in_channels"]) != int(pd["conv_dim"]) \
            or int(pr["mask_dim"]) != int(pd["mask_dim"]):
        raise UnsupportedConfig("Mask2Former predictor must classify masks and read the pixel decoder's channels")
    return {"type": "mask2former", "in_index": sel, "strides": list(pd["input_shape"]["strides"]),
            "channels": int(pr["hidden_dim"]),
            "pixel_decoder": {"channels": int(pd["conv_dim"]), "num_layers": int(pd["transformer_enc_layers"]),
                              "num_heads": int(pd["transformer_nheads"]),
                              "ffn_channels": int(pd["transformer_dim_feedforward"]), "num_points": 4,
                              "common_stride": int(pd["common_stride"])},
            "num_queries": int(pr["num_queries"]), "num_heads": int(pr["nheads"]),
            "ffn_channels": int(pr["dim_feedforward"]), "num_layers": int(pr["dec_layers"]) - 1,
            "pre_norm": bool(pr["pre_norm"]), "mask_channels": int(pr["mask_dim"]),
            "enforce_input_proj": bool(pr["enforce_input_project"]), "mask_size": None,
            "criterion": {"cost_class": float(matcher["cost_class"]), "cost_mask": float(matcher["cost_mask"]),
                          "cost_dice": float(matcher["cost_dice"]), "eos_coef": float(crit["eos_coef"]),
                          "num_points": int(sampler["num_points"]),
                          "oversample_ratio": float(sampler["oversample_ratio"]),
                          "importance_sample_ratio": float(sampler["importance_sample_ratio"]),
                          "matcher_num_points": int(matcher["num_points"]),
                          "deep_supervision": bool(head.get("deep_supervision", True))}}


# ---- transformers (Mask2FormerForUniversalSegmentation) ----------------------------------------------
_HF_PD, _HF_TM = r"^model\.pixel_level_module\.decoder\.", r"^model\.transformer_module\."
_HF_ENC, _HF_DEC = _HF_PD + r"encoder\.layers\.(\d+)\.", _HF_TM + r"decoder\.layers\.(\d+)\."
_HF_RULES = [
    (_HF_PD + r"input_projections\.(\d+)\.0\.", _PD + r"input_proj.\1.conv."),
    (_HF_PD + r"input_projections\.(\d+)\.1\.", _PD + r"input_proj.\1.norm."),
    (_HF_PD + r"level_embed$", _PD + "level_embed"),
    (_HF_ENC + r"self_attn\.", _PD + r"layers.\1.attn."),
    (_HF_ENC + r"self_attn_layer_norm\.", _PD + r"layers.\1.norm1."),
    (_HF_ENC + r"final_layer_norm\.", _PD + r"layers.\1.norm2."),
    (_HF_ENC + r"(fc\d)\.", _PD + r"layers.\1.\2."),
    (_HF_PD + r"mask_projection\.", _PD + "mask_features."),
    (_HF_DEC + r"cross_attn\.", _PR + r"layers.\1.cross_attn.attn."),
    (_HF_DEC + r"cross_attn_layer_norm\.", _PR + r"layers.\1.cross_attn.norm."),
    (_HF_DEC + r"self_attn\.out_proj\.", _PR + r"layers.\1.self_attn.attn.out_proj."),
    (_HF_DEC + r"self_attn_layer_norm\.", _PR + r"layers.\1.self_attn.norm."),
    (_HF_DEC + r"fc(\d)\.", _PR + r"layers.\1.ffn.linear\2."),
    (_HF_DEC + r"final_layer_norm\.", _PR + r"layers.\1.ffn.norm."),
    (_HF_TM + r"decoder\.layernorm\.", _PR + "decoder_norm."),
    (_HF_TM + r"decoder\.mask_predictor\.mask_embedder\.(\d+)\.0\.", _PR + r"mask_embed.layers.\1."),
    (_HF_TM + r"queries_embedder\.", _PR + "query_embed."),
    (_HF_TM + r"queries_features\.", _PR + "query_feat."),
    (_HF_TM + r"level_embed\.", _PR + "level_embed."),
    (_HF_TM + r"input_projections\.", _PR + "input_proj."),
    (r"^class_predictor\.", _PR + "classifier."),
]  # criterion.empty_weight keeps its name (the segmentor's criterion)
_HF_FPN = re.compile(_HF_PD + r"(adapter|layer)_(\d+)\.(\d)\.(.*)$")
_HF_SELF_QKV = re.compile(_HF_DEC + r"self_attn\.([qkv])_proj\.(weight|bias)$")
_HF_BACKBONE = "model.pixel_level_module.encoder."


@transformers_segmentor("mask2former", key_prefixes=("model.pixel_level_module.",))
def from_transformers(sd: dict, arch: dict) -> tuple[dict, dict]:
    """Hub files' and the installed transformers' names (the same outside the Swin backbone). The FPN
    convs ``adapter_k`` / ``layer_k`` (k = 1 the finest) become ``lateral_convs`` / ``output_convs``
    coarsest first; the decoder's separate q/k/v self-attention projections are concatenated into
    nn.MultiheadAttention's ``in_proj``; a file without the criterion's class weights
    (``criterion.empty_weight``) gets them from the head's ``criterion`` options."""
    head = arch["decode_head"]
    n_fpn = len(head.get("in_index", [0, 1, 2, 3])) - MSDeformPixelDecoder.num_levels
    backbone, rest, qkv = {}, {}, {}
    for key, value in sd.items():
        if key.startswith(_HF_BACKBONE):
            backbone[key[len(_HF_BACKBONE):]] = value
            continue
        if (m := _HF_FPN.match(key)):
            kind = "lateral_convs" if m.group(1) == "adapter" else "output_convs"
            part = {"0": "conv", "1": "norm"}[m.group(3)]
            rest[f"{_PD}{kind}.{n_fpn - int(m.group(2))}.{part}.{m.group(4)}"] = value
            continue
        if (m := _HF_SELF_QKV.match(key)):
            qkv.setdefault((int(m.group(1)), m.group(3)), {})[m.group(2)] = value
            continue
        for pattern, repl in _HF_RULES:
            new, hits = re.subn(pattern, repl, key)
            if hits:
                key = new
                break
        rest[key] = value
    for (i, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"transformers Mask2Former checkpoint lacks self-attention {kind} of decoder layer {i}")
        suffix = "in_proj_weight" if kind == "weight" else "in_proj_bias"
        rest[f"{_PR}layers.{i}.self_attn.attn.{suffix}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    if "criterion.empty_weight" not in rest and _PR + "classifier.weight" in rest:
        w = torch.ones(rest[_PR + "classifier.weight"].shape[0])
        w[-1] = float(head.get("criterion", {}).get("eos_coef", 0.1))
        rest["criterion.empty_weight"] = w
    return backbone, rest
