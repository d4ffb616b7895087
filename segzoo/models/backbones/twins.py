"""Twins (PCPVT and SVT) for dense prediction: native, on timm's Twins building blocks.

Native rather than timm's ``Twins``, which differs from the reference (SSSegmentation 1.7.0's
``PCPVT`` / ``SVT``, mmseg's) in three ways: its patch embedding drops the remainder of an input
that is not a multiple of the patch size (the reference pads it at the bottom/right first), its
LayerNorms use eps 1e-6 (the reference's ``{'type': 'LayerNorm'}``: 1e-5), and its locally grouped
attention never masks the padded tokens of a window (the reference masks them, see
:class:`LocallyGroupedAttention`); it also has no per-stage outputs, only a final norm. What this
module reuses from timm is what computes the same: the global sub-sampled attention (the
reference's ``nn.MultiheadAttention`` over a strided-conv + LayerNorm reduced key/value set, as
separate ``q`` / ``kv`` projections), the conditional position encoding (depthwise 3x3 conv +
identity after each stage's first block) and the MLP. Parameter names follow timm's ``Twins``
(``patch_embeds``, ``blocks``, ``pos_block``), which are those of the original Twins release, so
timm's ImageNet weights (the same Meituan checkpoints the reference starts from) load as they are.

PCPVT: every block is global sub-sampled attention. SVT: even blocks of a stage are locally
grouped (window) attention, odd ones global sub-sampled attention, and each stage output is
normalised (``out_norms``, the reference's ``norm_list``).

Training: the reference applies stochastic depth twice to the branches it builds with a
``dropout_cfg`` (the global attention and the MLP: once inside the branch, once on its output),
and once to the locally grouped attention; :class:`TwinsBlock` does the same.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from timm.models.twins import GlobalSubSampleAttn, PosConv

from ..foreign import UnsupportedConfig, check_defaults, check_options, rename_key, ssseg_backbone
from .base import add_fresh_out_norms, register_backbone

__all__ = ["Twins", "LocallyGroupedAttention", "TwinsBlock", "twins", "imagenet_weights", "adapt_imagenet",
           "from_ssseg_pcpvt", "from_ssseg_svt", "convert_sssegmentation", "convert_timm"]

_EPS = 1e-5  # the reference's {'type': 'LayerNorm'}: torch's default
_MASK = -1000.0  # the reference's additive attention mask

# (embed_dims, depths, SVT?) -> timm's ImageNet-1k classifier (``pretrained=True`` without ``pretrained_tag``)
_TIMM_WEIGHTS = {
    ((64, 128, 320, 512), (3, 4, 6, 3), False): "twins_pcpvt_small.in1k",
    ((64, 128, 320, 512), (3, 4, 18, 3), False): "twins_pcpvt_base.in1k",
    ((64, 128, 320, 512), (3, 8, 27, 3), False): "twins_pcpvt_large.in1k",
    ((64, 128, 256, 512), (2, 2, 10, 4), True): "twins_svt_small.in1k",
    ((96, 192, 384, 768), (2, 2, 18, 2), True): "twins_svt_base.in1k",
    ((128, 256, 512, 1024), (2, 2, 18, 2), True): "twins_svt_large.in1k",
}


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding (conv with stride = kernel, then LayerNorm on the tokens);
    the input is first zero-padded at the bottom/right to a multiple of the patch size."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=_EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        p = self.patch_size
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.proj(x)
        size = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), size


class LocallyGroupedAttention(nn.Module):
    """Self-attention inside non-overlapping ``window_size`` windows of a (B, H*W, C) token map,
    zero-padded at the bottom/right to whole windows.

    The padded tokens take part as the reference has them: where the map needs padding on *both*
    sides, an additive -1000 separates padded from real tokens (neither attends to the other);
    where it needs padding on one side only, the reference's mask covers the whole map (its
    ``mask[:, -0:]`` selects everything) and so masks nothing: real tokens also attend to the
    padded ones (zeros, whose keys and values are the projections' biases)."""

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Twins width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.ws = num_heads, window_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        h, w = size
        ws = self.ws
        pad_r, pad_b = (ws - w % ws) % ws, (ws - h % ws) % ws
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        gh, gw = hp // ws, wp // ws
        x = x.reshape(b, gh, ws, gw, ws, c).transpose(2, 3)  # (B, gh, gw, ws, ws, C)
        qkv = self.qkv(x).reshape(b, gh * gw, ws * ws, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # (B, windows, heads, ws*ws, head_dim)
        mask = None
        if pad_r > 0 and pad_b > 0:
            padded = torch.zeros(hp, wp, device=x.device, dtype=torch.bool)
            padded[h:, :] = True
            padded[:, w:] = True
            padded = padded.reshape(gh, ws, gw, ws).transpose(1, 2).reshape(gh * gw, ws * ws)
            differ = padded[:, None, :] != padded[:, :, None]
            mask = torch.zeros(differ.shape, device=x.device, dtype=q.dtype).masked_fill_(differ, _MASK)[:, None]
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x.transpose(2, 3).reshape(b, gh, gw, ws, ws, c).transpose(2, 3).reshape(b, hp, wp, c)
        x = x[:, :h, :w, :].reshape(b, n, c)
        return self.proj(x)


def _drop_path(rate: float, times: int) -> nn.Module:
    if rate <= 0:
        return nn.Identity()
    return nn.Sequential(*[DropPath(rate) for _ in range(times)]) if times > 1 else DropPath(rate)


class TwinsBlock(nn.Module):
    """Pre-norm transformer block: global sub-sampled attention (``window_size`` None) or locally
    grouped attention, then an MLP; both residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, window_size: int | None,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_EPS)
        if window_size is None:
            self.attn = GlobalSubSampleAttn(dim, num_heads, sr_ratio=sr_ratio)
        else:
            self.attn = LocallyGroupedAttention(dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim, eps=_EPS)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio))
        # the reference's double stochastic depth on the branches built with a dropout_cfg (see module doc)
        self.drop_path1 = _drop_path(drop_path, 2 if window_size is None else 1)
        self.drop_path2 = _drop_path(drop_path, 2)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), size))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class Twins(nn.Module):
    """Twins backbone: ``forward(x)`` returns every stage's output (strides 4, 8, 16, 32 with the
    default patch sizes) as NCHW tensors, normalised by ``out_norms`` where ``norm_after_stage``."""

    def __init__(self, embed_dims, depths, num_heads, mlp_ratios, sr_ratios, window_sizes=None,
                 patch_sizes=(4, 2, 2, 2), norm_after_stage: bool = False, drop_path_rate: float = 0.0,
                 in_chans: int = 3):
        super().__init__()
        n = len(depths)
        self.in_chans = in_chans
        self.patch_embeds = nn.ModuleList(
            PatchEmbed(in_chans if i == 0 else embed_dims[i - 1], embed_dims[i], patch_sizes[i]) for i in range(n))
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.blocks = nn.ModuleList()
        for k in range(n):
            first = sum(depths[:k])
            self.blocks.append(nn.ModuleList(
                TwinsBlock(embed_dims[k], num_heads[k], mlp_ratios[k], sr_ratios[k],
                           window_sizes[k] if window_sizes is not None and i % 2 == 0 else None, dpr[first + i])
                for i in range(depths[k])))
        self.pos_block = nn.ModuleList(PosConv(d, d) for d in embed_dims)
        self.out_norms = nn.ModuleList(nn.LayerNorm(d, eps=_EPS) for d in embed_dims) if norm_after_stage else None
        self.out_channels = [int(d) for d in embed_dims]
        reductions, r = [], 1
        for p in patch_sizes:
            r *= p
            reductions.append(r)
        self.reductions = reductions
        # a global attention's strided key/value conv needs a map at least sr_ratio wide
        self.min_input_size = max([r * s for r, s in zip(reductions, sr_ratios)] + [1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"Twins expects a (N, {self.in_chans}, H, W) tensor, got shape {tuple(x.shape)}")
        b, outs = x.shape[0], []
        for i, (embed, blocks, pos) in enumerate(zip(self.patch_embeds, self.blocks, self.pos_block)):
            x, size = embed(x)
            for j, blk in enumerate(blocks):
                x = blk(x, size)
                if j == 0:
                    x = pos(x, size)
            if self.out_norms is not None:
                x = self.out_norms[i](x)
            x = x.reshape(b, *size, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs


@register_backbone("twins")
def twins(embed_dims, depths, num_heads, mlp_ratios, sr_ratios, window_sizes=None, patch_sizes=(4, 2, 2, 2),
          norm_after_stage: bool = False, drop_path_rate: float = 0.0) -> nn.Module:
    """``window_sizes`` None: PCPVT (global attention only); a list: SVT (locally grouped attention
    with those windows on the even blocks of each stage)."""
    embed_dims, depths, num_heads = [int(d) for d in embed_dims], [int(d) for d in depths], [int(h) for h in num_heads]
    mlp_ratios, sr_ratios, patch_sizes = [float(m) for m in mlp_ratios], [int(s) for s in sr_ratios], \
        [int(p) for p in patch_sizes]
    lists = {"embed_dims": embed_dims, "depths": depths, "num_heads": num_heads, "mlp_ratios": mlp_ratios,
             "sr_ratios": sr_ratios, "patch_sizes": patch_sizes}
    if window_sizes is not None:
        window_sizes = [int(w) for w in window_sizes]
        lists["window_sizes"] = window_sizes
    if len({len(v) for v in lists.values()}) != 1:
        raise ValueError("Twins options need one entry per stage, got "
                         + ", ".join(f"{k}={v}" for k, v in lists.items()))
    for i, (d, h) in enumerate(zip(embed_dims, num_heads)):
        if d % h:
            raise ValueError(f"Twins stage {i} width {d} is not divisible by num_heads {h}")
    return Twins(embed_dims, depths, num_heads, mlp_ratios, sr_ratios, window_sizes, patch_sizes,
                 bool(norm_after_stage), float(drop_path_rate))


def imagenet_weights(cfg: dict) -> dict:
    """timm's ImageNet-1k classifier of the size (``pretrained_tag`` picks another one)."""
    key = (tuple(int(d) for d in cfg["embed_dims"]), tuple(int(d) for d in cfg["depths"]),
           cfg.get("window_sizes") is not None)
    name = cfg.get("pretrained_tag") or _TIMM_WEIGHTS.get(key)
    if name is None:
        raise ValueError(f"no ImageNet weights known for Twins embed_dims={list(key[0])}, depths={list(key[1])}, "
                         f"{'SVT' if key[2] else 'PCPVT'}; pass pretrained_tag")
    return {"timm": name}


def adapt_imagenet(sd: dict, model: nn.Module) -> dict:
    """The per-stage output norms of SVT, which an ImageNet classifier does not have, start fresh
    (weight 1, bias 0), as in the reference when it starts from ImageNet weights."""
    if getattr(model, "out_norms", None) is not None:
        sd = add_fresh_out_norms(sd, "pos_block.{i}.proj.0.weight", num_stages=len(model.out_norms))
    return sd


# ---- SSSegmentation config ---------------------------------------------------------------------------
_COMMON = {"in_channels": 3, "qkv_bias": True, "drop_rate": 0.0, "attn_drop_rate": 0.0,
           "norm_cfg": {"type": "LayerNorm"}, "act_cfg": {"type": "GELU"}}
_OPTIONS = {"type", "structure_type", "pretrained", "pretrained_model_path", "selected_indices", "out_indices",
            "embed_dims", "patch_sizes", "strides", "num_heads", "mlp_ratios", "depths", "sr_ratios",
            "norm_after_stage", "drop_path_rate", *_COMMON}
# the reference classes' defaults
_PCPVT = {"embed_dims": [64, 128, 320, 512], "patch_sizes": [4, 2, 2, 2], "strides": [4, 2, 2, 2],
          "num_heads": [1, 2, 5, 8], "mlp_ratios": [8, 8, 4, 4], "depths": [3, 4, 6, 3], "sr_ratios": [8, 4, 2, 1],
          "norm_after_stage": False, "drop_path_rate": 0.0}
_SVT = {"embed_dims": [64, 128, 256], "patch_sizes": [4, 2, 2, 2], "strides": [4, 2, 2, 2], "num_heads": [1, 2, 4],
        "mlp_ratios": [4, 4, 4], "depths": [4, 4, 4], "sr_ratios": [8, 4, 2, 1], "windiow_sizes": [7, 7, 7],
        "norm_after_stage": True, "drop_path_rate": 0.2}


def _from_ssseg(bb: dict, defaults: dict, svt: bool) -> dict:
    check_options(bb, _OPTIONS | ({"windiow_sizes"} if svt else set()), bb["type"])
    check_defaults(bb, **_COMMON)
    if bb.get("out_indices", (0, 1, 2, 3)) not in ((0, 1, 2, 3), [0, 1, 2, 3]):
        raise UnsupportedConfig(f"{bb['type']} with out_indices={bb['out_indices']!r} is not ported")
    o = {**defaults, **bb}
    if list(o["patch_sizes"]) != list(o["strides"]):
        raise UnsupportedConfig(f"{bb['type']} with patch_sizes {o['patch_sizes']} != strides {o['strides']} "
                                     "(overlapping patch embedding) is not ported")
    n = len(o["depths"])
    out = {"type": "twins", "embed_dims": list(o["embed_dims"]), "depths": list(o["depths"]),
           "num_heads": list(o["num_heads"]), "mlp_ratios": [float(m) for m in o["mlp_ratios"]],
           # the reference takes as many entries as there are stages (its defaults carry a 4th)
           "sr_ratios": list(o["sr_ratios"])[:n], "window_sizes": list(o["windiow_sizes"])[:n] if svt else None,
           "patch_sizes": list(o["patch_sizes"])[:n], "norm_after_stage": bool(o["norm_after_stage"]),
           "drop_path_rate": float(o["drop_path_rate"])}
    return out


@ssseg_backbone("PCPVT")
def from_ssseg_pcpvt(bb: dict) -> dict:
    """SSSegmentation ``PCPVT`` config -> ``arch["backbone"]``."""
    return _from_ssseg(bb, _PCPVT, svt=False)


@ssseg_backbone("SVT")
def from_ssseg_svt(bb: dict) -> dict:
    """SSSegmentation ``SVT`` config -> ``arch["backbone"]``."""
    return _from_ssseg(bb, _SVT, svt=True)


# ---- foreign state dicts -> ours -----------------------------------------------------------------
_BLK = r"blocks.\1.\2."
_SSSEG_RULES = [
    (r"^patch_embeds\.(\d+)\.projection\.", r"patch_embeds.\1.proj."),
    (r"^position_encodings\.(\d+)\.proj\.", r"pos_block.\1.proj.0."),
    (r"^layers\.(\d+)\.(\d+)\.attn\.attn\.out_proj\.", _BLK + "attn.proj."),
    (r"^layers\.(\d+)\.(\d+)\.ffn\.layers\.0\.0\.", _BLK + "mlp.fc1."),
    (r"^layers\.(\d+)\.(\d+)\.ffn\.layers\.1\.", _BLK + "mlp.fc2."),
    (r"^layers\.(\d+)\.(\d+)\.", _BLK),
    (r"^norm_list\.(\d+)\.", r"out_norms.\1."),
]
_IN_PROJ = re.compile(r"^layers\.(\d+)\.(\d+)\.attn\.attn\.in_proj_(weight|bias)$")


def convert_sssegmentation(sd: dict) -> dict:
    """SSSegmentation ``PCPVT`` / ``SVT`` keys (``backbone_net.`` stripped) -> ours: the global
    attention's packed ``in_proj`` (query; key; value) splits into ``q`` and ``kv``."""
    out = {}
    for k, v in sd.items():
        m = _IN_PROJ.match(k)
        if m:
            c = v.shape[0] // 3
            out[f"blocks.{m.group(1)}.{m.group(2)}.attn.q.{m.group(3)}"] = v[:c]
            out[f"blocks.{m.group(1)}.{m.group(2)}.attn.kv.{m.group(3)}"] = v[c:]
            continue
        out[rename_key(k, _SSSEG_RULES) or k] = v
    return out


# the classifier of timm's Twins (and of the original release): the head and the final norm
_TIMM_CLASSIFIER = re.compile(r"^(head|norm)\.(weight|bias)$")


def convert_timm(sd: dict) -> dict:
    """A timm (or original Twins release) ImageNet classifier -> ours: the classifier (``head``,
    final ``norm``) is dropped, any other key stays (the strict load names it); SVT's output norms
    are added by :func:`adapt_imagenet`."""
    if "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    return {k: v for k, v in sd.items() if not _TIMM_CLASSIFIER.match(k)}
