"""BEiT and MAE vision transformers for dense prediction, with the feature-to-pyramid neck.

One network serves three references: SSSegmentation's ``BEiT`` and ``MAE`` backbones (mmseg's) and
transformers' ``BeitForSemanticSegmentation`` (its ``beit`` encoder and ``fpn`` neck). A plain ViT:
a class token, pre-norm blocks with layer scale (``gamma_1``/``gamma_2``) and a relative position
bias table per block; MAE adds an absolute position embedding and a bias on the whole ``qkv``
projection, BEiT biases only the query and the value (``q_bias``/``v_bias``). The feature maps of
the blocks ``out_indices`` (class token dropped) go through the optional ``neck``: one op per map,
x4 (transposed conv, BatchNorm, GELU, transposed conv), x2 (transposed conv), x1, x0.5 or x0.25
(max pooling), SSSegmentation's ``Feature2Pyramid`` and transformers' ``BeitFPNNeck`` alike.

Native rather than timm's ``Beit``: timm's attention has no whole-``qkv`` bias (MAE's), its
relative position index is fixed to the pretraining window, and its layer norm epsilon is fixed
where transformers' checkpoints use 1e-12. Parameter names follow timm's ``Beit`` (``blocks.i``,
``attn.qkv``, ``gamma_1``...), so the BEiT / MAE ImageNet checkpoints load by name; timm's
``PatchEmbed``, ``Mlp`` and ``DropPath`` are used as they are.

Window and input size: the bias tables are made for the grid of ``img_size`` (the training crop).
SSSegmentation runs only that grid (slide inference on crops of that size); transformers runs any
grid, resizing each table (bilinearly, its sub-table without the 3 class-token entries) to the
grid of the input at every forward. Both behaviours are reproduced: at ``img_size`` the tables are
used as they are, on other inputs they are resized as transformers does (an extension for the
SSSegmentation models, whose reference fails there). MAE's absolute position embedding is resized
bicubically on such inputs (transformers' ``interpolate_pos_encoding``), also an extension.
"""
from __future__ import annotations

import functools
import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed, trunc_normal_

from ..foreign import UnsupportedConfig, check_defaults, rename_key, ssseg_backbone
from ..foreign import TRANSFORMERS_KEY_PREFIXES
from .base import register_backbone

__all__ = ["BEiT", "Feature2Pyramid", "beit", "from_ssseg_beit", "from_ssseg_mae", "feature2pyramid_from_ssseg",
           "convert_sssegmentation", "convert_transformers", "split_transformers", "convert_timm",
           "imagenet_weights", "adapt_imagenet", "resize_rel_pos_table_geometric"]

# SSSegmentation's ImageNet weights (``DEFAULT_MODEL_URLS`` of its beit.py / mae.py), by structure type
_MODELSTORE = "https://github.com/SegmentationBLWX/modelstore/releases/download/ssseg_beit/"
_SSSEG_WEIGHTS = {
    "beit_base_patch16_224_pt22k_ft22k": _MODELSTORE + "beit_base_patch16_224_pt22k_ft22k.pth",
    "beit_large_patch16_224_pt22k_ft22k": _MODELSTORE + "beit_large_patch16_224_pt22k_ft22k.pth",
    "mae_pretrain_vit_base": "https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth",
}
# (embed_dim, depth, abs_pos_embed) -> the structure type the references fine-tune from
_DEFAULT_WEIGHTS = {(768, 12, False): "beit_base_patch16_224_pt22k_ft22k",
                    (1024, 24, False): "beit_large_patch16_224_pt22k_ft22k",
                    (768, 12, True): "mae_pretrain_vit_base"}


@functools.lru_cache(maxsize=16)
def _rel_pos_index(wh: int, ww: int) -> torch.Tensor:
    """(wh*ww + 1)^2 indices into a bias table of (2wh-1)(2ww-1) + 3 rows: token pairs by their
    offset, then class-to-token, token-to-class and class-to-class (the last three rows). A normal
    tensor even when first asked for under ``torch.inference_mode`` (it is cached, and training reuses it)."""
    with torch.inference_mode(False):
        coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
        idx = (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)
        n = (2 * wh - 1) * (2 * ww - 1) + 3
        out = torch.zeros((wh * ww + 1,) * 2, dtype=torch.long)
        out[1:, 1:] = idx
        out[0, :] = n - 3
        out[:, 0] = n - 2
        out[0, 0] = n - 1
    return out


class Attention(nn.Module):
    """Multi-head self-attention with a relative position bias over the grid plus a class token.
    ``qkv_bias``: "qv" (query and value biases, the key's is zero: BEiT), True (one bias on the
    whole projection: MAE) or False."""

    def __init__(self, dim: int, num_heads: int, window_size: tuple[int, int], qkv_bias="qv"):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.window_size = tuple(window_size)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias is True)
        if qkv_bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1) + 3, num_heads))
        self.proj = nn.Linear(dim, dim)

    def rel_pos_bias(self, grid: tuple[int, int]) -> torch.Tensor:
        """(num_heads, N, N) bias for a ``grid`` of tokens plus the class token; the table is resized
        (transformers' ``BeitRelativePositionBias``) where ``grid`` is not the window."""
        table = self.relative_position_bias_table
        wh, ww = self.window_size
        if tuple(grid) != self.window_size:
            nh, nw = 2 * grid[0] - 1, 2 * grid[1] - 1
            # transformers lays the sub-table out as (2ww-1, 2wh-1); the same as ours for square windows
            sub = table[:-3].reshape(1, 2 * ww - 1, 2 * wh - 1, -1).permute(0, 3, 1, 2)
            sub = F.interpolate(sub, size=(nh, nw), mode="bilinear", align_corners=False)
            table = torch.cat([sub.permute(0, 2, 3, 1).reshape(nh * nw, -1), table[-3:]])
        index = _rel_pos_index(int(grid[0]), int(grid[1])).to(table.device)
        n = grid[0] * grid[1] + 1
        return table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        bias = self.qkv.bias
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        mask = self.rel_pos_bias(grid).unsqueeze(0).to(q.dtype)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block with layer scale: x + g1 * attn(norm1(x)), then x + g2 * mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, window_size, mlp_ratio: float, qkv_bias, init_values: float,
                 drop_path: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, window_size, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if init_values and init_values > 0:
            self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))
            self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        y = self.attn(self.norm1(x), grid)
        x = x + self.drop_path(y if self.gamma_1 is None else self.gamma_1 * y)
        y = self.mlp(self.norm2(x))
        return x + self.drop_path(y if self.gamma_2 is None else self.gamma_2 * y)


class Feature2Pyramid(nn.ModuleList):
    """One op per feature map, by its rescale factor: 4 (transposed conv, BatchNorm, GELU, transposed
    conv), 2 (transposed conv), 1 (identity), 0.5 and 0.25 (max pooling)."""

    def __init__(self, dim: int, rescales=(4, 2, 1, 0.5)):
        ops = []
        for r in rescales:
            if r == 4:
                ops.append(nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, 2), nn.BatchNorm2d(dim), nn.GELU(),
                                         nn.ConvTranspose2d(dim, dim, 2, 2)))
            elif r == 2:
                ops.append(nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, 2)))
            elif r == 1:
                ops.append(nn.Identity())
            elif r in (0.5, 0.25):
                k = int(round(1 / r))
                ops.append(nn.MaxPool2d(k, k))
            else:
                raise ValueError(f"feature-to-pyramid rescale {r} is not one of 4, 2, 1, 0.5, 0.25")
        super().__init__(ops)
        self.rescales = [float(r) for r in rescales]

    def forward(self, feats):
        if len(feats) != len(self):
            raise ValueError(f"the neck has {len(self)} levels, got {len(feats)} feature maps")
        return [op(f) for op, f in zip(self, feats)]


class BEiT(nn.Module):
    """``forward(x)`` returns the maps of blocks ``out_indices`` (NCHW, stride ``patch_size``), or the
    neck's multi-scale maps when ``neck`` (rescale factors) is given. Any input size (see the
    module docstring for grids other than ``img_size``'s); inputs that are not multiples of the
    patch size lose their last partial patch, as in both references."""
    frozen_inference_pays = False

    def __init__(self, img_size=(640, 640), patch_size: int = 16, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias="qv", init_values: float = 0.1,
                 abs_pos_embed: bool = False, out_indices=(3, 5, 7, 11), layer_norm_eps: float = 1e-6, neck=None,
                 drop_path_rate: float = 0.1, in_chans: int = 3):
        super().__init__()
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.out_indices = [int(i) for i in out_indices]
        self.patch_embed = PatchEmbed(img_size=None, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                                      output_fmt="NHWC", strict_img_size=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1] + 1, embed_dim)) \
            if abs_pos_embed else None
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, self.grid, mlp_ratio, qkv_bias, init_values, dpr[i],
                                          layer_norm_eps) for i in range(depth))
        self.neck = Feature2Pyramid(embed_dim, neck) if neck else None
        n = len(self.out_indices)
        self.out_channels = [embed_dim] * n
        self.reductions = [int(round(patch_size / r)) for r in neck] if neck else [patch_size] * n
        # the neck's max-pooling (rescale < 1) needs at least 1 / rescale tokens a side
        self.min_input_size = patch_size * max([1] + [int(round(1 / r)) for r in (neck or ()) if r < 1])
        self._init_weights(zero_rel_pos=abs_pos_embed)

    def _init_weights(self, zero_rel_pos: bool) -> None:
        """As the references: truncated-normal linear layers, zero biases; BEiT's bias tables
        truncated-normal, MAE's (the models with an absolute embedding) zero."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if not zero_rel_pos:
            for blk in self.blocks:
                trunc_normal_(blk.attn.relative_position_bias_table, std=0.02)

    def lr_decay_layer(self, name: str, num_layers: int, decay_type: str) -> int:
        """The layer id of parameter ``name`` (in this module) for layer-wise learning-rate decay, as
        SSSegmentation numbers its BEiT / MAE (``getlayeridforvit``): class token, position embedding
        and patch embedding 0, block i i + 1, the rest (the neck, a segmentor-level module there)
        ``num_layers + 1``."""
        if "layer_wise" not in decay_type:
            raise ValueError(f"BEiT has no {decay_type!r} learning-rate decay (only layer_wise / layer_wise_vit)")
        parts = name.split(".")
        if parts[0] in ("cls_token", "pos_embed", "patch_embed"):
            return 0
        if parts[0] == "blocks":
            return int(parts[1]) + 1
        return num_layers + 1

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        if (h, w) == self.grid:
            return self.pos_embed
        gh, gw = self.grid
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = grid.reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"BEiT expects a (N, {self.in_chans}, H, W) tensor, got shape {tuple(x.shape)}")
        x = self.patch_embed(x)
        b, h, w, c = x.shape
        x = torch.cat([self.cls_token.expand(b, -1, -1), x.reshape(b, h * w, c)], dim=1)
        if self.pos_embed is not None:
            x = x + self._pos_embed(h, w)
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, (h, w))
            if i in self.out_indices:
                outs.append(x[:, 1:].transpose(1, 2).reshape(b, c, h, w))
        return self.neck(outs) if self.neck is not None else outs


@register_backbone("beit")
def beit(img_size, patch_size: int = 16, embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
         mlp_ratio: float = 4.0, qkv_bias="qv", init_values: float = 0.1, abs_pos_embed: bool = False,
         out_indices=(3, 5, 7, 11), layer_norm_eps: float = 1e-6, neck=None, drop_path_rate: float = 0.1) -> nn.Module:
    img_size = [int(img_size)] * 2 if isinstance(img_size, (int, float)) else [int(s) for s in img_size]
    patch_size, embed_dim, depth, num_heads = int(patch_size), int(embed_dim), int(depth), int(num_heads)
    out_indices = [int(i) for i in out_indices]
    if qkv_bias not in ("qv", True, False):
        raise ValueError(f"BEiT qkv_bias must be 'qv', true or false, got {qkv_bias!r}")
    if embed_dim % num_heads:
        raise ValueError(f"BEiT embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
    if len(img_size) != 2 or min(img_size) < patch_size:
        raise ValueError(f"BEiT img_size must be two sides of at least patch_size {patch_size}, got {img_size}")
    bad = [i for i in out_indices if not 0 <= i < depth]
    if bad or not out_indices or len(set(out_indices)) != len(out_indices):
        raise ValueError(f"BEiT out_indices {out_indices} must be distinct block indices in [0, {depth})")
    if neck is not None and len(neck) != len(out_indices):
        raise ValueError(f"BEiT neck has {len(neck)} rescales for {len(out_indices)} out_indices")
    return BEiT(img_size, patch_size, embed_dim, depth, num_heads, float(mlp_ratio), qkv_bias, float(init_values),
                bool(abs_pos_embed), out_indices, float(layer_norm_eps), list(neck) if neck else None,
                float(drop_path_rate))


# ---- ImageNet weights ---------------------------------------------------------------------------------
def imagenet_weights(cfg: dict) -> dict:
    """The ImageNet checkpoint SSSegmentation fine-tunes from (its ``DEFAULT_MODEL_URLS``): BEiT base /
    large pt22k-ft22k, MAE ViT-B pretraining; ``pretrained_tag`` names one of these structure types
    or a timm model."""
    key = (int(cfg["embed_dim"]), int(cfg["depth"]), bool(cfg.get("abs_pos_embed", False)))
    tag = cfg.get("pretrained_tag") or _DEFAULT_WEIGHTS.get(key)
    if tag is None:
        raise ValueError(f"no ImageNet weights known for BEiT embed_dim={key[0]}, depth={key[1]}, "
                         f"abs_pos_embed={key[2]}; pass pretrained_tag")
    if tag not in _SSSEG_WEIGHTS:
        return {"timm": tag}
    url = _SSSEG_WEIGHTS[tag]
    return {"sources": [{"url": url, "filename": url.rsplit("/", 1)[-1]}], "label": f"ImageNet weights {tag}"}


_TIMM_DROP = re.compile(r"^(head|fc_norm|norm|lm_head|mask_token|decoder|rel_pos_bias)(\.|$)|relative_position_index$")


def convert_timm(sd: dict) -> dict:
    """A BEiT / MAE / timm ``Beit`` ImageNet checkpoint -> ours: the classifier, final norms, mask
    token, MAE decoder and derived buffers are dropped (unused here; SSSegmentation loads these
    checkpoints non-strictly and ignores them too)."""
    for k in ("model", "state_dict"):
        if k in sd and isinstance(sd[k], dict):
            sd = sd[k]
    out = {}
    for k, v in sd.items():
        k = k[len("encoder."):] if k.startswith("encoder.") else k
        if _TIMM_DROP.search(k) or k.startswith("decoder_"):
            continue
        out[k] = v
    return out


def _geometric_positions(src: int, dst: int) -> list[float]:
    """The source offsets SSSegmentation places on the destination axis: symmetric, growing
    geometrically so that ``src`` samples span ``dst`` (its ``geometricsequenceinterpolation``)."""
    left, right = 1.01, 1.5
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if (1.0 - q ** (src // 2)) / (1.0 - q) > dst // 2:
            right = q
        else:
            left = q
    dis, cur = [], 1.0
    for i in range(src // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    return [-d for d in reversed(dis)] + [0.0] + dis


def resize_rel_pos_table_geometric(table: torch.Tensor, dst_size: int) -> torch.Tensor:
    """A (S*S + 3, heads) bias table -> (D*D + 3, heads), D = ``dst_size`` (= 2 * window - 1): each head's
    S x S map resampled at the integer offsets by the interpolating bicubic spline through the
    geometric source positions; the 3 class-token rows kept. SSSegmentation does this with
    ``scipy.interpolate.interp2d(kind="cubic")``, removed from scipy 1.14; on a regular grid its
    point-for-point replacement is ``RectBivariateSpline(kx=3, ky=3, s=0)`` (scipy's "interp2d
    transition guide", section 1.1), used here."""
    from scipy.interpolate import RectBivariateSpline
    import numpy as np
    src_size = int(math.isqrt(table.shape[0] - 3))
    if src_size * src_size != table.shape[0] - 3:
        raise ValueError(f"relative position table of {table.shape[0]} rows is not square")
    if src_size == dst_size:
        return table
    pos = np.asarray(_geometric_positions(src_size, dst_size))
    t = dst_size // 2.0
    dst = np.arange(-t, t + 0.1, 1.0)
    cols = []
    for i in range(table.shape[1]):
        z = table[:-3, i].view(src_size, src_size).float().numpy()
        spline = RectBivariateSpline(pos, pos, z, kx=3, ky=3, s=0)
        cols.append(torch.tensor(spline(dst, dst), dtype=torch.float32).reshape(-1, 1))
    return torch.cat([torch.cat(cols, dim=1).to(table), table[-3:]], dim=0)


def adapt_imagenet(sd: dict, model: nn.Module) -> dict:
    """Fit an ImageNet checkpoint to the model, as SSSegmentation's loader does: bias tables made for
    another window resized (:func:`resize_rel_pos_table_geometric`; square windows only), MAE's
    absolute embedding resized bicubically; what the checkpoint lacks (the neck, MAE's layer scales
    and bias tables) keeps the model's initialisation, which is the reference's."""
    own = model.state_dict()
    for k in list(sd):
        if k.endswith("relative_position_bias_table") and k in own and own[k].shape != sd[k].shape:
            wh, ww = model.grid
            if wh != ww:
                raise ValueError(f"ImageNet bias tables can only be resized to a square window, not {model.grid}")
            sd[k] = resize_rel_pos_table_geometric(sd[k], 2 * wh - 1)
        elif k == "pos_embed" and "pos_embed" in own and own[k].shape != sd[k].shape:
            gh, gw = model.grid
            n = sd[k].shape[1] - 1
            s = math.isqrt(n)
            if s * s != n or gh != gw:
                raise ValueError(f"cannot resize a position embedding of {n} patches to the grid {model.grid}")
            grid = sd[k][:, 1:].reshape(1, s, s, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
            sd[k] = torch.cat([sd[k][:, :1], grid.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)
    for k, v in own.items():
        kept = k.startswith("neck.") or k.endswith(("gamma_1", "gamma_2", "relative_position_bias_table"))
        if k not in sd and kept:
            sd[k] = v.clone()
    return sd


# ---- SSSegmentation config ---------------------------------------------------------------------------
def _ssseg_common(bb: dict, what: str) -> dict:
    check_defaults(bb, in_channels=3, attn_drop_rate=0.0, act_cfg={"type": "GELU"}, patch_norm=False,
                   final_norm=False, num_fcs=2, pretrained_model_path="")
    norm = bb.get("norm_cfg", {"type": "LayerNorm", "eps": 1e-6})
    if norm.get("type") != "LayerNorm" or set(norm) - {"type", "eps"}:
        raise UnsupportedConfig(f"{what} with norm_cfg={norm!r} is not ported (only LayerNorm)")
    img = bb.get("img_size", (640, 640))
    img = [int(img)] * 2 if isinstance(img, (int, float)) else [int(s) for s in img]
    out = bb.get("out_indices", (3, 5, 7, 11))
    out = [int(out) if int(out) >= 0 else int(bb.get("num_layers", 12)) - 1] if isinstance(out, int) else list(out)
    return {"type": "beit", "img_size": img, "patch_size": int(bb.get("patch_size", 16)),
            "embed_dim": int(bb.get("embed_dims", 768)), "depth": int(bb.get("num_layers", 12)),
            "num_heads": int(bb.get("num_heads", 12)), "mlp_ratio": float(bb.get("mlp_ratio", 4)),
            "out_indices": out, "layer_norm_eps": float(norm.get("eps", 1e-5)),
            "drop_path_rate": float(bb.get("drop_path_rate", 0.1))}


@ssseg_backbone("BEiT")
def from_ssseg_beit(bb: dict) -> dict:
    """SSSegmentation ``BEiT`` config (its class defaults filled in) -> ``arch["backbone"]``."""
    out = _ssseg_common(bb, "BEiT")
    out.update(qkv_bias="qv" if bb.get("qv_bias", True) else False, init_values=float(bb.get("init_values", 0.1)),
               abs_pos_embed=False)
    if bb.get("structure_type") in _SSSEG_WEIGHTS:
        out["pretrained_tag"] = bb["structure_type"]
    return out


@ssseg_backbone("MAE")
def from_ssseg_mae(bb: dict) -> dict:
    """SSSegmentation ``MAE`` config (its class defaults filled in) -> ``arch["backbone"]``."""
    out = _ssseg_common(bb, "MAE")
    out.update(qkv_bias=True, init_values=float(bb.get("init_values", 1.0)), abs_pos_embed=True)
    if bb.get("structure_type") in _SSSEG_WEIGHTS:
        out["pretrained_tag"] = bb["structure_type"]
    return out


def feature2pyramid_from_ssseg(backbone: dict, cfg: dict) -> dict:
    """``arch["backbone"]`` with SSSegmentation's ``head.feature2pyramid`` neck (built with the
    segmentor's ``norm_cfg``, a BatchNorm) added as its ``neck``."""
    f2p = cfg["head"]["feature2pyramid"]
    extra = set(f2p) - {"embed_dim", "rescales", "norm_cfg"}
    if extra:
        raise UnsupportedConfig(f"feature2pyramid options {sorted(extra)} are not ported")
    norm = (f2p.get("norm_cfg") or cfg.get("norm_cfg") or {}).get("type", "BatchNorm2d")
    if norm not in ("BatchNorm2d", "SyncBatchNorm"):
        raise UnsupportedConfig(f"feature2pyramid with {norm} is not ported (only BatchNorm)")
    if int(f2p["embed_dim"]) != backbone["embed_dim"]:
        raise UnsupportedConfig(f"feature2pyramid embed_dim {f2p['embed_dim']} is not the backbone's "
                                f"{backbone['embed_dim']}")
    rescales = [float(r) if r < 1 else int(r) for r in f2p.get("rescales", [4, 2, 1, 0.5])]
    if rescales not in ([4, 2, 1, 0.5], [2, 1, 0.5, 0.25]):  # the two orders Feature2Pyramid runs
        raise UnsupportedConfig(f"feature2pyramid rescales {rescales} are not ported")
    return dict(backbone, neck=rescales)


# ---- foreign state dicts -> ours -----------------------------------------------------------------
_SSSEG_RULES = [
    (r"^patch_embed\.projection\.", "patch_embed.proj."),
    (r"^layers\.(\d+)\.ln1\.", r"blocks.\1.norm1."),
    (r"^layers\.(\d+)\.ln2\.", r"blocks.\1.norm2."),
    (r"^layers\.(\d+)\.ffn\.layers\.0\.0\.", r"blocks.\1.mlp.fc1."),
    (r"^layers\.(\d+)\.ffn\.layers\.1\.", r"blocks.\1.mlp.fc2."),
    (r"^layers\.(\d+)\.", r"blocks.\1."),
]


def convert_sssegmentation(sd: dict) -> dict:
    """SSSegmentation ``BEiT`` / ``MAE`` keys (``backbone_net.`` stripped) -> ours, and those of its
    ``Feature2Pyramid`` neck (``feats_to_pyramid_net.``, in the segmentor's state dict)
    -> ``neck.i``; ``relative_position_index`` (derived from the window) is dropped."""
    up2 = 1 if any(k.startswith("feats_to_pyramid_net.upsample_4x.") for k in sd) else 0
    out = {}
    for k, v in sd.items():
        if k.endswith("relative_position_index"):
            continue
        m = re.match(r"^feats_to_pyramid_net\.upsample_(4|2)x\.(\d+)\.(.*)$", k)
        if m:
            out[f"neck.{0 if m.group(1) == '4' else up2}.{m.group(2)}.{m.group(3)}"] = v
            continue
        out[rename_key(k, _SSSEG_RULES) or k] = v
    return out


_BLK = r"blocks.\1."
_HF_RULES = [  # Hub file names (transformers 4) and the installed transformers' state_dict() names
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.layernorm_before\.", _BLK + "norm1."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.layernorm_after\.", _BLK + "norm2."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.lambda_(1|2)$", _BLK + r"gamma_\2"),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.(?:attention\.attention\.)?relative_position_bias\."
     r"relative_position_bias_table$", _BLK + "attn.relative_position_bias_table"),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:output\.dense|o_proj)\.", _BLK + "attn.proj."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.(?:intermediate\.dense|mlp\.fc1)\.", _BLK + "mlp.fc1."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.(?:output\.dense|mlp\.fc2)\.", _BLK + "mlp.fc2."),
    (r"^fpn1\.([013])\.", r"neck.0.\1."),  # Sequential(ConvTranspose2d, BatchNorm2d, GELU, ConvTranspose2d)
    (r"^fpn\.fpn1\.conv_transpose1\.", "neck.0.0."),
    (r"^fpn\.fpn1\.normalization\.", "neck.0.1."),
    (r"^fpn\.fpn1\.conv_transpose2\.", "neck.0.3."),
    (r"^(?:fpn2\.0\.|fpn\.fpn2\.)", "neck.1.0."),
]
_HF_QKV = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:attention\.(query|key|value)|([qkv])_proj)\."
                     r"(weight|bias)$")


def convert_transformers(sd: dict) -> dict:
    """transformers ``BeitForSemanticSegmentation`` encoder and neck keys (``beit.`` stripped; the
    neck's ``fpn1.*``/``fpn2.*`` or ``fpn.*`` as they are) -> ours. Accepts the Hub files' names
    (``encoder.layer.i.attention.attention.query``, ``fpn1.0``) and the installed transformers'
    (``layers.i.attention.q_proj``, ``fpn.fpn1.conv_transpose1``). The separate query/key/value
    projections become one ``qkv`` with the query and value biases apart (the key has none); the
    relative position index, mask token and pooler (unused in segmentation) are dropped."""
    out, qkv, biases = {}, {}, {}
    for k, v in sd.items():
        k = k[len("beit."):] if k.startswith("beit.") else k
        if k.endswith("relative_position_index") or k.startswith(("pooler.", "layernorm.", "embeddings.mask_token")):
            continue
        m = _HF_QKV.match(k)
        if m:
            which = "qkv".index((m.group(2) or m.group(3))[0])
            if m.group(4) == "weight":
                qkv.setdefault(int(m.group(1)), [None] * 3)[which] = v
            else:
                biases[(int(m.group(1)), "qkv"[which])] = v
            continue
        new = rename_key(k, _HF_RULES)
        if new is None and k.startswith(("fpn1.", "fpn.")):
            raise ValueError(f"unknown transformers BEiT neck key {k!r}")
        out[new or k] = v
    for i, parts in qkv.items():
        if any(p is None for p in parts):
            raise ValueError(f"transformers BEiT checkpoint lacks a query/key/value weight of layer {i}")
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat(parts, 0)
    for (i, which), v in biases.items():
        if which == "k":
            raise ValueError(f"transformers BEiT checkpoint has a key bias in layer {i} (not BEiT's attention)")
        out[f"blocks.{i}.attn.{which}_bias"] = v
    return out


_HF_HEAD_RULES = [  # BeitForSemanticSegmentation's heads: Hub file names, then the installed names
    (r"^decode_head\.psp_modules\.(\d+)\.1\.", r"decode_head.ppm.stages.\1."),
    (r"^decode_head\.psp_modules\.blocks\.(\d+)\.conv\.", r"decode_head.ppm.stages.\1."),
    (r"^decode_head\.(?:psp_)?bottleneck\.", "decode_head.ppm.bottleneck."),
    (r"^auxiliary_head\.", "aux_heads.0."),
]


TRANSFORMERS_KEY_PREFIXES.add("beit.")  # BeitForSemanticSegmentation's keys: how detect_format knows it


def split_transformers(sd: dict, arch: dict) -> tuple[dict, dict]:
    """A ``BeitForSemanticSegmentation`` checkpoint -> (encoder and neck keys, for
    :func:`convert_transformers`; the UPerNet and FCN heads' keys, in segzoo's names). The heads
    are mmseg's UPerNet and FCN, as in ``UperNetForSemanticSegmentation``."""
    backbone, rest = {}, {}
    for key, value in sd.items():
        if key.startswith(("beit.", "fpn1.", "fpn2.", "fpn.")):
            backbone[key] = value
            continue
        for pattern, repl in _HF_HEAD_RULES:  # every rule applies (the aux head's prefix after the decode head's)
            key = re.sub(pattern, repl, key)
        key = re.sub(r"\.(?:convolution)\.", ".conv.", key)
        key = re.sub(r"\.(?:normalization|batch_norm)\.", ".bn.", key)
        rest[key] = value
    return backbone, rest
