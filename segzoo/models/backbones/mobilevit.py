"""MobileViT (xx-small / x-small / small) and MobileViTV2 (width 0.5 .. 2.0) backbones for dense heads.

Native, not timm's network: timm's MobileViT block ends its 1x1 projection with an activation, which
SSSegmentation's ``MobileVitBlock`` omits (its ``conv_proj`` is conv + BN only), and timm's ByobNet
dilates the blocks of a stride-16/8 network differently from transformers' (which keeps every 3x3
conv undilated and only drops the stride of the downsampling inverted residual, with a dilation of
``d // 2`` in its depthwise conv), which every transformers DeepLabV3 checkpoint uses (output stride
16). The parameter names follow timm's (``convert_timm`` renames only the inverted residuals' convs
and ``final_conv``), and at output stride 32 the ``"transformers"`` flavour (v1) and the
``"sssegmentation"`` flavour (v2) compute exactly timm's ``mobilevit_*`` / ``mobilevitv2_*`` features
(tested), so timm's ImageNet classifiers (Apple's ml-cvnets weights) initialise ``pretrained_backbone``.

Network: stem (3x3 stride-2 conv, BN, SiLU) and five stages, returned finest first (strides 2, 4,
8, 16, 32 at ``output_stride=32``): two MobileNetV2 stages of inverted residuals, then three stages
of one downsampling inverted residual followed by a MobileViT block (v1: local 3x3 conv, 1x1 conv to
the transformer width, transformer layers with multi-head attention over the tokens that share a
position inside their 2x2 patch, LayerNorm, 1x1 projection back, fusion 3x3 conv of input and
projection; v2: depthwise 3x3 conv, 1x1 conv, separable linear-attention layers with GroupNorm(1),
GroupNorm(1), 1x1 projection). v1 optionally ends with the 1x1 ``conv_1x1_exp`` (4x widening) on
the last stage, as SSSegmentation's backbone does and transformers' segmentation model does not.

``flavor`` selects the behavioural differences between the references:

* ``"sssegmentation"``: v1 ``conv_proj`` without activation; inverted-residual width
  ``round(c * expand_ratio)``; v2 on a map whose side is not a multiple of the patch size first
  resizes it up to the next multiple (bilinear, ``align_corners=True``) and keeps that size.
* ``"transformers"``: v1 ``conv_proj`` with SiLU; width rounded to a multiple of 8; v2 drops the
  last row/column that do not fill a patch (``nn.Unfold``) and gives them zeros after the
  transformer (``nn.Fold``). (Both v1 versions resize a map to whole patches and back, bilinear,
  ``align_corners=False``.)
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..foreign import UnsupportedConfig, rename_key, ssseg_backbone
from .base import register_backbone

__all__ = ["MobileViTBackbone", "mobilevit", "mobilevitv2", "make_divisible", "from_ssseg", "from_ssseg_v2",
           "convert_sssegmentation", "convert_transformers", "convert_timm", "imagenet_weights", "adapt_imagenet",
           "V1_ARCHS", "V2_ARCHS"]

_FLAVORS = ("sssegmentation", "transformers")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``min_value``), never more
    than 10% below ``value`` (the MobileNet rule)."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * value else new)


# ---- blocks -----------------------------------------------------------------------------------
class ConvBNAct(nn.Sequential):
    """Bias-free conv -> BatchNorm2d -> SiLU (``act=False`` drops the SiLU)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 dilation: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=(kernel_size - 1) // 2 * dilation, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        if act:
            self.act = nn.SiLU()


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise conv (``stride``, ``dilation``), linear 1x1
    projection; a residual where the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: float, dilation: int = 1,
                 flavor: str = "sssegmentation"):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        if flavor == "transformers":
            hidden = make_divisible(hidden, 8)
        self.expand = ConvBNAct(in_channels, hidden, 1) if expand_ratio != 1 or flavor == "transformers" else None
        self.dw = ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden, dilation=dilation)
        self.project = ConvBNAct(hidden, out_channels, 1, act=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x) if self.expand is not None else x))
        return x + y if self.residual else y


class Attention(nn.Module):
    """Multi-head self-attention with packed q/k/v projection (``nn.MultiheadAttention``'s layout)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MobileViT transformer width {dim} is not divisible by its {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """fc1 -> SiLU -> fc2, as Linear layers (v1, tokens last) or 1x1 convs (v2, channels first)."""

    def __init__(self, dim: int, hidden: int, conv: bool = False):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1) if conv else nn.Linear(dim, hidden)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(hidden, dim, 1) if conv else nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer on (N, tokens, C): LayerNorm (eps 1e-5) -> attention, LayerNorm -> MLP."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, ffn_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MobileViTBlock(nn.Module):
    """MobileViT (v1) block on a (N, C, H, W) map; see the module docstring."""

    def __init__(self, channels: int, dim: int, ffn_dim: int, depth: int, num_heads: int, patch_size: int = 2,
                 proj_act: bool = False):
        super().__init__()
        self.patch_size = patch_size
        self.conv_kxk = ConvBNAct(channels, channels, 3)
        self.conv_1x1 = nn.Conv2d(channels, dim, 1, bias=False)
        self.transformer = nn.Sequential(*[TransformerLayer(dim, num_heads, ffn_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.conv_proj = ConvBNAct(dim, channels, 1, act=proj_act)
        self.conv_fusion = ConvBNAct(2 * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))
        b, c, h, w = x.shape
        p = self.patch_size
        nh, nw = math.ceil(h / p), math.ceil(w / p)
        resized = (nh * p, nw * p) != (h, w)
        if resized:
            x = F.interpolate(x, size=(nh * p, nw * p), mode="bilinear", align_corners=False)
        # one sequence per position inside the patch: (b * p * p, nh * nw, c)
        t = x.reshape(b, c, nh, p, nw, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, nh * nw, c)
        t = self.norm(self.transformer(t))
        x = t.reshape(b, p, p, nh, nw, c).permute(0, 5, 3, 1, 4, 2).reshape(b, c, nh * p, nw * p)
        if resized:
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return self.conv_fusion(torch.cat((shortcut, self.conv_proj(x)), dim=1))


class LinearSelfAttention(nn.Module):
    """MobileViTV2's separable self-attention on (N, C, P, T): one context score per token (softmax
    over the T tokens of each in-patch position), a context vector of the scored keys, multiplied
    into ReLU(values), then a 1x1 projection."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.qkv_proj = nn.Conv2d(dim, 1 + 2 * dim, 1)
        self.out_proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_proj(x).split([1, self.dim, self.dim], dim=1)
        context = (k * q.softmax(dim=-1)).sum(dim=-1, keepdim=True)
        return self.out_proj(F.relu(v) * context)


class LinearTransformerLayer(nn.Module):
    """Pre-norm layer on (N, C, P, T): GroupNorm(1) -> linear attention, GroupNorm(1) -> 1x1-conv MLP."""

    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.attn = LinearSelfAttention(dim)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = Mlp(dim, ffn_dim, conv=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MobileViTV2Block(nn.Module):
    """MobileViTV2 block on a (N, C, H, W) map; ``partial_patches`` says what happens to a side that
    is not a multiple of the patch size: ``"resize"`` (SSSegmentation, timm) or ``"drop"``
    (transformers); see the module docstring."""

    def __init__(self, channels: int, dim: int, ffn_dim: int, depth: int, patch_size: int = 2,
                 partial_patches: str = "resize"):
        super().__init__()
        if partial_patches not in ("resize", "drop"):
            raise ValueError(f"partial_patches must be 'resize' or 'drop', got {partial_patches!r}")
        self.patch_size = patch_size
        self.partial_patches = partial_patches
        self.conv_kxk = ConvBNAct(channels, channels, 3, groups=channels)
        self.conv_1x1 = nn.Conv2d(channels, dim, 1, bias=False)
        self.transformer = nn.Sequential(*[LinearTransformerLayer(dim, ffn_dim) for _ in range(depth)])
        self.norm = nn.GroupNorm(1, dim)
        self.conv_proj = ConvBNAct(dim, channels, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        h, w = x.shape[-2:]
        if self.partial_patches == "resize":
            nh, nw = math.ceil(h / p), math.ceil(w / p)
            if (nh * p, nw * p) != (h, w):
                x = F.interpolate(x, size=(nh * p, nw * p), mode="bilinear", align_corners=True)
        else:
            nh, nw = h // p, w // p
        x = self.conv_1x1(self.conv_kxk(x))
        out_h, out_w = x.shape[-2:]
        x = x[..., :nh * p, :nw * p]
        b, d = x.shape[:2]
        t = x.reshape(b, d, nh, p, nw, p).permute(0, 1, 3, 5, 2, 4).reshape(b, d, p * p, nh * nw)
        t = self.norm(self.transformer(t))
        x = t.reshape(b, d, p, p, nh, nw).permute(0, 1, 4, 2, 5, 3).reshape(b, d, nh * p, nw * p)
        if (nh * p, nw * p) != (out_h, out_w):
            x = F.pad(x, (0, out_w - nw * p, 0, out_h - nh * p))
        return self.conv_proj(x)


# ---- model ------------------------------------------------------------------------------------
class MobileViTBackbone(nn.Module):
    """Stem, five stages (``stages``, Sequentials) and, for v1, the optional ``conv_1x1_exp``;
    ``forward(x)`` returns the five stage outputs (the last one widened by ``conv_1x1_exp``)."""

    frozen_inference_pays = False  # not measured for this family

    def __init__(self, stem_channels: int, stages: list, out_channels: list, reductions: list,
                 exp_channels: int | None = None):
        super().__init__()
        self.stem = ConvBNAct(3, stem_channels, 3, stride=2)
        self.stages = nn.ModuleList(stages)
        self.conv_1x1_exp = ConvBNAct(out_channels[-1], exp_channels, 1) if exp_channels else None
        self.out_channels = list(out_channels[:-1]) + [exp_channels or out_channels[-1]]
        self.reductions = list(reductions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        if self.conv_1x1_exp is not None:
            outs[-1] = self.conv_1x1_exp(outs[-1])
        return outs


def _stage_dilations(output_stride: int) -> list[int]:
    """Dilation of stages 2, 3, 4 (transformers' scheme: stride 16 dilates the last, 8 the last two)."""
    if output_stride not in (8, 16, 32):
        raise ValueError(f"MobileViT output_stride must be 8, 16 or 32, got {output_stride}")
    return {32: [1, 1, 1], 16: [1, 1, 2], 8: [1, 2, 4]}[output_stride]


def _build(version: int, channels, dims, depths, expand_ratio: float, mobilenet_blocks, output_stride: int,
           flavor: str, make_block) -> tuple:
    if flavor not in _FLAVORS:
        raise ValueError(f"MobileViT flavor must be one of {_FLAVORS}, got {flavor!r}")
    channels, dims, depths = [int(c) for c in channels], [int(d) for d in dims], [int(d) for d in depths]
    if len(channels) != 6 or len(dims) != 3 or len(depths) != 3:
        raise ValueError(f"MobileViT{'V2' if version == 2 else ''} needs 6 channels (stem + 5 stages), 3 dims and "
                         f"3 depths; got {channels}, {dims}, {depths}")
    stages, reductions, red = [], [], 2
    for i, (n, stride) in enumerate(zip(mobilenet_blocks, (1, 2))):
        stages.append(nn.Sequential(*[InvertedResidual(channels[i] if j == 0 else channels[i + 1], channels[i + 1],
                                                       stride if j == 0 else 1, expand_ratio, flavor=flavor)
                                      for j in range(n)]))
        red *= stride
        reductions.append(red)
    for i, dilation in enumerate(_stage_dilations(output_stride)):
        cin, cout = channels[i + 2], channels[i + 3]
        down = InvertedResidual(cin, cout, 2 if dilation == 1 else 1, expand_ratio,
                                dilation=dilation // 2 if dilation > 1 else 1, flavor=flavor)
        stages.append(nn.Sequential(down, make_block(cout, dims[i], depths[i])))
        red *= 2 if dilation == 1 else 1
        reductions.append(red)
    return stages, channels[1:], reductions


@register_backbone("mobilevit")
def mobilevit(channels=(16, 32, 64, 96, 128, 160), dims=(144, 192, 240), depths=(2, 4, 3), expand_ratio: float = 4.0,
              num_heads: int = 4, mlp_ratio: float = 2.0, patch_size: int = 2, exp_channels: int | None = 640,
              output_stride: int = 32, flavor: str = "sssegmentation") -> nn.Module:
    """MobileViT v1 (defaults: small). ``channels``: stem and the five stages' widths; ``dims``: the three
    transformer widths; ``exp_channels``: width of the final 1x1 expansion (None: no expansion)."""
    proj_act = flavor == "transformers"

    def block(c, d, depth):
        return MobileViTBlock(c, d, int(d * mlp_ratio), depth, int(num_heads), int(patch_size), proj_act)

    stages, outs, reds = _build(1, channels, dims, depths, float(expand_ratio), (1, 3), int(output_stride), flavor,
                                block)
    return MobileViTBackbone(int(channels[0]), stages, outs, reds, int(exp_channels) if exp_channels else None)


@register_backbone("mobilevitv2")
def mobilevitv2(channels=(32, 64, 128, 256, 384, 512), dims=(128, 192, 256), depths=(2, 4, 3),
                expand_ratio: float = 2.0, mlp_ratio: float = 2.0, patch_size: int = 2, output_stride: int = 32,
                flavor: str = "sssegmentation") -> nn.Module:
    """MobileViTV2 (defaults: width 1.0). ``channels``: stem and the five stages' widths; ``dims``: the three
    attention widths; MLP width ``dim * mlp_ratio`` (transformers: rounded down to a multiple of 16)."""
    partial = "drop" if flavor == "transformers" else "resize"

    def block(c, d, depth):
        ffn = int(d * mlp_ratio)
        if flavor == "transformers":
            ffn = ffn // 16 * 16
        return MobileViTV2Block(c, d, ffn, depth, int(patch_size), partial)

    stages, outs, reds = _build(2, channels, dims, depths, float(expand_ratio), (1, 2), int(output_stride), flavor,
                                block)
    backbone = MobileViTBackbone(int(channels[0]), stages, outs, reds)
    if partial == "drop":  # every block needs one whole patch: the last stage's map at least patch_size cells
        backbone.min_input_size = reds[-1] * int(patch_size)
    return backbone


# ---- SSSegmentation config ---------------------------------------------------------------------------
# SSSegmentation's ``arch_settings``: v1 arch -> (channels, dims, expand_ratio); depths are (2, 4, 3)
V1_ARCHS = {
    "small": ([16, 32, 64, 96, 128, 160], [144, 192, 240], 4.0),
    "x_small": ([16, 32, 48, 64, 80, 96], [96, 120, 144], 4.0),
    "xx_small": ([16, 16, 24, 48, 64, 80], [64, 80, 96], 2.0),
}
# v2 arch -> width multiplier; channels (stem, 64w, 128w, 256w, 384w, 512w), attention dims half the stage widths
V2_ARCHS = {"mobilevitv2_050": 0.5, "mobilevitv2_075": 0.75, "mobilevitv2_100": 1.0, "mobilevitv2_125": 1.25,
            "mobilevitv2_150": 1.5, "mobilevitv2_175": 1.75, "mobilevitv2_200": 2.0}
_V1_STRUCTURES = {"mobilevit-small": "small", "mobilevit-xsmall": "x_small", "mobilevit-xxsmall": "xx_small"}

def v2_widths(width: float) -> tuple[list[int], list[int]]:
    """(channels, dims) of MobileViTV2 at ``width``, as SSSegmentation's table and transformers compute them."""
    stem = make_divisible(min(max(32 * width, 16), 64), 8, 16)
    channels = [stem, make_divisible(64 * width, 16)] + [make_divisible(c * width, 8) for c in (128, 256, 384, 512)]
    return channels, [make_divisible(c // 2, 8) for c in channels[3:]]


def _check_act(bb: dict, allowed) -> None:
    act = bb.get("act_cfg")
    if act is not None and act.get("type") not in allowed:
        raise UnsupportedConfig(f"{bb['type']} with act_cfg {act!r} is not ported (only SiLU/Swish)")


def _arch_name(bb: dict, table: dict, structures: dict, default: str) -> str:
    """SSSegmentation builds ``arch`` (default ``default``) whatever ``structure_type`` says; the zoo's
    configs name the size only in ``structure_type`` (their heads' widths follow it), so an absent
    ``arch`` is read from ``structure_type`` where that names a known size."""
    arch = bb.get("arch")
    if arch is None:
        arch = structures.get(bb.get("structure_type"), default)
    arch = str(arch).lower()
    if arch not in table:
        raise UnsupportedConfig(f"{bb['type']} arch {arch!r} is not ported")
    return arch


@ssseg_backbone("MobileViT")
def from_ssseg(bb: dict) -> dict:
    """SSSegmentation ``MobileViT`` config -> ``arch["backbone"]``."""
    if bb.get("in_channels", 3) != 3 or bb.get("stem_channels", 16) != 16:
        raise UnsupportedConfig("MobileViT with in_channels/stem_channels other than 3/16 is not ported")
    if list(bb.get("out_indices", (0, 1, 2, 3, 4))) != [0, 1, 2, 3, 4]:
        raise UnsupportedConfig("MobileViT out_indices other than (0, 1, 2, 3, 4) are not ported")
    _check_act(bb, ("Swish", "SiLU"))
    arch = _arch_name(bb, V1_ARCHS, _V1_STRUCTURES, "small")
    channels, dims, ratio = V1_ARCHS[arch]
    return {"type": "mobilevit", "channels": list(channels), "dims": list(dims), "depths": [2, 4, 3],
            "expand_ratio": ratio, "num_heads": 4, "mlp_ratio": 2.0, "patch_size": 2,
            "exp_channels": int(bb.get("last_exp_factor", 4)) * channels[-1], "output_stride": 32,
            "flavor": "sssegmentation"}


@ssseg_backbone("MobileViTV2")
def from_ssseg_v2(bb: dict) -> dict:
    """SSSegmentation ``MobileViTV2`` config -> ``arch["backbone"]``."""
    if bb.get("in_channels", 3) != 3:
        raise UnsupportedConfig("MobileViTV2 with in_channels other than 3 is not ported")
    if list(bb.get("out_indices", (0, 1, 2, 3, 4))) != [0, 1, 2, 3, 4]:
        raise UnsupportedConfig("MobileViTV2 out_indices other than (0, 1, 2, 3, 4) are not ported")
    _check_act(bb, ("SiLU", "Swish"))
    arch = _arch_name(bb, V2_ARCHS, {k: k for k in V2_ARCHS}, "mobilevitv2_050")
    channels, dims = v2_widths(V2_ARCHS[arch])
    return {"type": "mobilevitv2", "channels": channels, "dims": dims, "depths": [2, 4, 3], "expand_ratio": 2.0,
            "mlp_ratio": 2.0, "patch_size": 2, "output_stride": 32, "flavor": "sssegmentation"}


# ---- foreign state dicts -> ours -----------------------------------------------------------------
_IR = {"0": "expand", "1": "dw", "2": "project"}
_SSSEG_RULES = [
    (r"^layers\.(\d+)\.1\.local_rep\.0\.", r"stages.\1.1.conv_kxk."),
    (r"^layers\.(\d+)\.1\.local_rep\.1\.conv\.", r"stages.\1.1.conv_1x1."),
    (r"^layers\.(\d+)\.1\.global_rep\.(\d+)\.ln([12])\.", r"stages.\1.1.transformer.\2.norm\3."),
    (r"^layers\.(\d+)\.1\.global_rep\.(\d+)\.attn\.attn\.in_proj_(weight|bias)$",
     r"stages.\1.1.transformer.\2.attn.qkv.\3"),
    (r"^layers\.(\d+)\.1\.global_rep\.(\d+)\.attn\.attn\.out_proj\.", r"stages.\1.1.transformer.\2.attn.proj."),
    (r"^layers\.(\d+)\.1\.global_rep\.(\d+)\.ffn\.layers\.0\.0\.", r"stages.\1.1.transformer.\2.mlp.fc1."),
    (r"^layers\.(\d+)\.1\.global_rep\.(\d+)\.ffn\.layers\.1\.", r"stages.\1.1.transformer.\2.mlp.fc2."),
    (r"^layers\.(\d+)\.1\.global_rep\.\d+\.(weight|bias)$", r"stages.\1.1.norm.\2"),  # the final LayerNorm
    (r"^layers\.(\d+)\.1\.(conv_proj|conv_fusion)\.", r"stages.\1.1.\2."),
    (r"^layers\.", "stages."),
]


def convert_sssegmentation(sd: dict) -> dict:
    """SSSegmentation ``MobileViT`` / ``MobileViTV2`` keys (``backbone_net.`` stripped) -> ours. Its
    inverted residual is ``conv.{0,1,2}`` (expansion, depthwise, projection); v2 otherwise uses our names."""
    out = {}
    for k, v in sd.items():
        k = rename_key(k, _SSSEG_RULES) or k
        k = re.sub(r"^(stages\.\d+\.\d+)\.conv\.([012])\.", lambda m: f"{m.group(1)}.{_IR[m.group(2)]}.", k)
        out[k] = v
    return out


_HF_RULES = [
    (r"^conv_stem\.", "stem."),
    (r"^encoder\.layer\.([01])\.layer\.(\d+)\.", r"stages.\1.\2."),
    (r"^encoder\.layer\.(\d+)\.downsampling_layer\.", r"stages.\1.0."),
    (r"^encoder\.layer\.(\d+)\.transformer\.layer\.(\d+)\.layernorm_before\.", r"stages.\1.1.transformer.\2.norm1."),
    (r"^encoder\.layer\.(\d+)\.transformer\.layer\.(\d+)\.layernorm_after\.", r"stages.\1.1.transformer.\2.norm2."),
    (r"^encoder\.layer\.(\d+)\.transformer\.layer\.(\d+)\.attention\.output\.dense\.",
     r"stages.\1.1.transformer.\2.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.transformer\.layer\.(\d+)\.attention\.(qkv_proj|out_proj)\.conv\.",
     r"stages.\1.1.transformer.\2.attn.\3."),
    (r"^encoder\.layer\.(\d+)\.transformer\.layer\.(\d+)\.intermediate\.dense\.",
     r"stages.\1.1.transformer.\2.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.transformer\.layer\.(\d+)\.output\.dense\.", r"stages.\1.1.transformer.\2.mlp.fc2."),
    (r"^encoder\.layer\.(\d+)\.transformer\.layer\.(\d+)\.ffn\.conv([12])\.conv\.",
     r"stages.\1.1.transformer.\2.mlp.fc\3."),
    (r"^encoder\.layer\.(\d+)\.layernorm\.", r"stages.\1.1.norm."),
    (r"^encoder\.layer\.(\d+)\.conv_1x1\.conv\.", r"stages.\1.1.conv_1x1."),
    (r"^encoder\.layer\.(\d+)\.conv_projection\.", r"stages.\1.1.conv_proj."),
    (r"^encoder\.layer\.(\d+)\.fusion\.", r"stages.\1.1.conv_fusion."),
    (r"^encoder\.layer\.(\d+)\.conv_kxk\.", r"stages.\1.1.conv_kxk."),
]
_HF_IR = {"expand_1x1": "expand", "conv_3x3": "dw", "reduce_1x1": "project"}
_HF_QKV = re.compile(r"^encoder\.layer\.(\d+)\.transformer\.layer\.(\d+)\.attention\.attention\.(query|key|value)\."
                     r"(weight|bias)$")


def convert_transformers(sd: dict) -> dict:
    """transformers ``MobileViTModel`` / ``MobileViTV2Model`` keys (``mobilevit.`` / ``mobilevitv2.``
    stripped; the Hub files and the installed transformers' ``state_dict()`` use the same names) ->
    ours. The separate query/key/value projections are packed into ``qkv``. transformers' models read
    BGR images; the stem conv's input channels are reversed here, so that ours reads RGB, as segzoo
    feeds it."""
    out, qkv = {}, {}
    for k, v in sd.items():
        k = k.replace(".convolution.", ".conv.").replace(".normalization.", ".bn.")
        if (m := _HF_QKV.match(k)):
            qkv.setdefault((m.group(1), m.group(2), m.group(4)), {})[m.group(3)] = v
            continue
        k = rename_key(k, _HF_RULES) or k
        k = re.sub(r"^(stages\.\d+\.\d+)\.(expand_1x1|conv_3x3|reduce_1x1)\.",
                   lambda m: f"{m.group(1)}.{_HF_IR[m.group(2)]}.", k)
        if k == "stem.conv.weight":
            v = v.flip(1)
        out[k] = v
    for (stage, layer, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"transformers MobileViT layer {stage}.{layer}: incomplete q/k/v {kind}s {sorted(parts)}")
        out[f"stages.{stage}.1.transformer.{layer}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0)
    return out


# ---- ImageNet weights (timm's MobileViT / MobileViTV2 classifiers, Apple's ml-cvnets weights) ---------------
_TIMM_V1 = {"small": "mobilevit_s.cvnets_in1k", "x_small": "mobilevit_xs.cvnets_in1k",
            "xx_small": "mobilevit_xxs.cvnets_in1k"}


def imagenet_weights(cfg: dict) -> dict:
    """timm's ImageNet classifier of the configuration's size (``pretrained_tag`` picks another timm name)."""
    if cfg.get("pretrained_tag"):
        return {"timm": cfg["pretrained_tag"]}
    channels, dims = [int(c) for c in cfg.get("channels", ())], [int(d) for d in cfg.get("dims", ())]
    if cfg["type"] == "mobilevit":
        for arch, (ch, dm, ratio) in V1_ARCHS.items():
            if (ch, dm, float(cfg.get("expand_ratio", 4.0))) == (channels, dm if not dims else dims, ratio):
                return {"timm": _TIMM_V1[arch]}
    else:
        for arch, width in V2_ARCHS.items():
            if (channels, dims) == tuple(map(list, v2_widths(width))):
                return {"timm": f"{arch}.cvnets_in1k"}
    raise ValueError(f"no ImageNet weights known for {cfg['type']} channels={channels}, dims={dims}; "
                     "pass pretrained_tag")


_TIMM_IR = {"conv1_1x1": "expand", "conv2_kxk": "dw", "conv3_1x1": "project"}


def convert_timm(sd: dict) -> dict:
    """A timm MobileViT / MobileViTV2 classifier state dict -> ours: ``head.*`` (the classifier) is dropped,
    the inverted residuals' ``conv{1,2,3}_*`` and ``final_conv`` (v1's 1x1 expansion) are renamed; the
    rest has our names already."""
    out = {}
    for k, v in sd.items():
        if k.startswith("head."):
            continue
        k = re.sub(r"^(stages\.\d+\.\d+)\.(conv1_1x1|conv2_kxk|conv3_1x1)\.",
                   lambda m: f"{m.group(1)}.{_TIMM_IR[m.group(2)]}.", k)
        out[re.sub(r"^final_conv\.", "conv_1x1_exp.", k)] = v
    return out


def adapt_imagenet(sd: dict, backbone: nn.Module) -> dict:
    """Drop the classifier's 1x1 expansion where the backbone has none (transformers' segmentation models)."""
    if getattr(backbone, "conv_1x1_exp", None) is None:
        sd = {k: v for k, v in sd.items() if not k.startswith("conv_1x1_exp.")}
    return sd
