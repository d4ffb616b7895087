"""Mix Vision Transformer (MiT-b0..b5), the Segformer encoder.

Four stages, each: overlapping patch embedding (strided conv + LayerNorm), transformer blocks
with spatial-reduction attention (keys/values from a strided conv + LayerNorm) and a Mix-FFN
(linear -> 3x3 depthwise conv -> GELU -> linear), then a LayerNorm; every stage returns NCHW.

timm has no MiT; its PVTv2 is close but fixes the patch-embed / reduction LayerNorm eps at 1e-5
and the later stages' patch size, so the network is written here. ``flavor`` selects the one
behavioural difference between the references: SSSegmentation builds every LayerNorm with
eps=1e-6 (and ``qkv_bias=False`` there also drops the output projection's bias, as
``nn.MultiheadAttention`` does); transformers builds every LayerNorm with the default 1e-5.
"""
from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

from ..foreign import check_defaults, ssseg_backbone
from .base import register_backbone

__all__ = ["MixVisionTransformer", "mit", "from_ssseg", "convert_sssegmentation", "convert_transformers", "convert_timm",
           "segformer_encoder", "imagenet_weights"]

_FLAVORS = {"sssegmentation": 1e-6, "transformers": 1e-5}  # flavor -> LayerNorm eps

# ImageNet-1k weights (transformers SegformerForImageClassification): (embed_dims, depths) -> Hub repo
_PRETRAINED = {
    ((32, 64, 160, 256), (2, 2, 2, 2)): "nvidia/mit-b0",
    ((64, 128, 320, 512), (2, 2, 2, 2)): "nvidia/mit-b1",
    ((64, 128, 320, 512), (3, 4, 6, 3)): "nvidia/mit-b2",
    ((64, 128, 320, 512), (3, 4, 18, 3)): "nvidia/mit-b3",
    ((64, 128, 320, 512), (3, 8, 27, 3)): "nvidia/mit-b4",
    ((64, 128, 320, 512), (3, 6, 40, 3)): "nvidia/mit-b5",
}
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


# ---- blocks -----------------------------------------------------------------------------------
def _to_nchw(x: torch.Tensor, hw) -> torch.Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], hw[0], hw[1])


class OverlapPatchEmbed(nn.Module):
    """Strided conv with padding ``kernel // 2``, flattened to tokens, then LayerNorm."""

    def __init__(self, in_channels: int, dim: int, kernel_size: int, stride: int, norm_layer):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size, stride=stride, padding=kernel_size // 2)
        self.norm = norm_layer(dim)

    def forward(self, x: torch.Tensor):
        x = self.proj(x)
        hw = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), hw


class EfficientAttention(nn.Module):
    """Multi-head attention whose keys/values come from a ``sr_ratio``-strided conv + LayerNorm."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool, proj_bias: bool, norm_layer):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MiT stage width {dim} is not divisible by its {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.sr_norm = norm_layer(dim)

    def forward(self, x: torch.Tensor, hw) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, -1).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.sr_norm(self.sr(_to_nchw(x, hw)).flatten(2).transpose(1, 2))
        k, v = self.kv(x).reshape(b, x.shape[1], 2, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class MixFFN(nn.Module):
    """fc1 -> 3x3 depthwise conv -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, hw) -> torch.Tensor:
        x = self.dwconv(_to_nchw(self.fc1(x), hw)).flatten(2).transpose(1, 2)
        return self.fc2(self.act(x))


class MiTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: float, qkv_bias: bool, proj_bias: bool,
                 drop_path: float, norm_layer):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = EfficientAttention(dim, num_heads, sr_ratio, qkv_bias, proj_bias, norm_layer)
        self.norm2 = norm_layer(dim)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, hw) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x), hw))


class MiTStage(nn.Module):
    def __init__(self, in_channels: int, dim: int, depth: int, num_heads: int, sr_ratio: int, patch_size: int,
                 stride: int, mlp_ratio: float, qkv_bias: bool, proj_bias: bool, drop_paths, norm_layer):
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(in_channels, dim, patch_size, stride, norm_layer)
        self.blocks = nn.ModuleList(
            MiTBlock(dim, num_heads, sr_ratio, mlp_ratio, qkv_bias, proj_bias, dp, norm_layer) for dp in drop_paths)
        self.norm = norm_layer(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, hw = self.patch_embed(x)
        for block in self.blocks:
            x = block(x, hw)
        return _to_nchw(self.norm(x), hw)


# ---- model ------------------------------------------------------------------------------------
class MixVisionTransformer(nn.Module):
    #: the reference's (SSSegmentation's and mmsegmentation's) rule key ``norm`` in this network's
    #: names: its patch-embedding, block and attention norms; the stage-final norm (``layers.i.2`` in
    #: the references) has no ``norm`` in its reference name, so no rule reaches it there
    PARAM_RULE_KEYS = {"norm": ["patch_embed.norm.", "norm1.", "norm2.", "sr_norm."]}
    frozen_inference_pays = False  # attention + LayerNorm: the frozen copy ran 0.95x-1.05x eager (512x1024)

    def __init__(self, embed_dims, num_heads, depths, sr_ratios, patch_sizes=(7, 3, 3, 3), strides=(4, 2, 2, 2),
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path_rate: float = 0.0,
                 flavor: str = "sssegmentation", in_channels: int = 3):
        super().__init__()
        if flavor not in _FLAVORS:
            raise ValueError(f"MiT flavor must be one of {sorted(_FLAVORS)}, got {flavor!r}")
        lists = {"embed_dims": embed_dims, "num_heads": num_heads, "depths": depths, "sr_ratios": sr_ratios,
                 "patch_sizes": patch_sizes, "strides": strides}
        if len({len(v) for v in lists.values()}) != 1:
            raise ValueError("MiT needs one value per stage in each of " + ", ".join(
                f"{k} ({len(v)})" for k, v in lists.items()))
        norm_layer = partial(nn.LayerNorm, eps=_FLAVORS[flavor])
        proj_bias = qkv_bias or flavor == "transformers"
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        stages, start = [], 0
        for i, depth in enumerate(depths):
            stages.append(MiTStage(in_channels if i == 0 else embed_dims[i - 1], embed_dims[i], depth, num_heads[i],
                                   sr_ratios[i], patch_sizes[i], strides[i], mlp_ratio, qkv_bias, proj_bias,
                                   dpr[start:start + depth], norm_layer))
            start += depth
        self.stages = nn.ModuleList(stages)
        self.out_channels = list(embed_dims)
        red, self.reductions = 1, []
        for s in strides:
            red *= s
            self.reductions.append(red)
        # each stage's spatial-reduction conv (kernel = stride = sr) needs sr tokens per side
        self.min_input_size = max(r * sr for r, sr in zip(self.reductions, sr_ratios))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


# ---- SSSegmentation config ---------------------------------------------------------------------------
@ssseg_backbone("MixVisionTransformer")
def from_ssseg(bb: dict) -> dict:
    """SSSegmentation ``MixVisionTransformer`` config -> ``arch["backbone"]`` (its ``embed_dims`` is per head)."""
    check_defaults(bb, num_stages=4, in_channels=3)
    heads = list(bb["num_heads"])
    return {"type": "mit", "embed_dims": [int(bb["embed_dims"]) * h for h in heads], "num_heads": heads,
            "depths": list(bb["num_layers"]), "sr_ratios": list(bb["sr_ratios"]),
            "patch_sizes": list(bb.get("patch_sizes", [7, 3, 3, 3])), "strides": list(bb.get("strides", [4, 2, 2, 2])),
            "mlp_ratio": float(bb.get("mlp_ratio", 4)), "qkv_bias": bool(bb.get("qkv_bias", True)),
            "drop_path_rate": float(bb.get("drop_path_rate", 0.0)), "flavor": "sssegmentation"}


# ---- conversions ------------------------------------------------------------------------------
def convert_sssegmentation(sd: dict) -> dict:
    """SSSegmentation ``MixVisionTransformer`` keys (``layers.i.{0,1,2}``, packed ``in_proj``, 1x1-conv FFN)."""
    out = {}
    for k, v in sd.items():
        m = re.match(r"^layers\.(\d+)\.(.*)$", k)
        if not m:
            out[k] = v
            continue
        s, rest = f"stages.{m.group(1)}", m.group(2)
        if (b := re.match(r"^1\.(\d+)\.(.*)$", rest)):
            blk, r = f"{s}.blocks.{b.group(1)}", b.group(2)
            if (p := re.match(r"^attn\.attn\.in_proj_(weight|bias)$", r)):
                dim = v.shape[0] // 3
                out[f"{blk}.attn.q.{p.group(1)}"] = v[:dim]
                out[f"{blk}.attn.kv.{p.group(1)}"] = v[dim:]
                continue
            r = re.sub(r"^attn\.attn\.out_proj\.", "attn.proj.", r)
            r = re.sub(r"^attn\.norm\.", "attn.sr_norm.", r)
            if (f := re.match(r"^ffn\.layers\.([014])\.(weight|bias)$", r)):
                name = {"0": "fc1", "1": "dwconv", "4": "fc2"}[f.group(1)]
                if name != "dwconv" and f.group(2) == "weight" and v.ndim == 4:
                    v = v.flatten(1)
                r = f"mlp.{name}.{f.group(2)}"
            out[f"{blk}.{r}"] = v
        elif rest.startswith("0.projection."):
            out[f"{s}.patch_embed.proj.{rest[len('0.projection.'):]}"] = v
        elif rest.startswith("0.norm."):
            out[f"{s}.patch_embed.norm.{rest[len('0.norm.'):]}"] = v
        elif rest.startswith("2."):
            out[f"{s}.norm.{rest[2:]}"] = v
        else:
            out[k] = v
    return out


# Hub file names (transformers 4) -> the installed transformers' state_dict names
_HF_HUB_RENAMES = [
    (r"^patch_embeddings\.(\d+)\.", r"stages.\1.patch_embeddings."), (r"^block\.(\d+)\.", r"stages.\1.blocks."),
    (r"^layer_norm\.(\d+)\.", r"stages.\1.layer_norm."),
    (r"\.attention\.self\.query\.", ".attention.q_proj."), (r"\.attention\.self\.key\.", ".attention.k_proj."),
    (r"\.attention\.self\.value\.", ".attention.v_proj."),
    (r"\.attention\.self\.sr\.", ".attention.sequence_reduction.sequence_reduction."),
    (r"\.attention\.self\.layer_norm\.", ".attention.sequence_reduction.layer_norm."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."), (r"\.mlp\.dense1\.", ".mlp.fc1."),
    (r"\.mlp\.dense2\.", ".mlp.fc2."), (r"\.layer_norm_1\.", ".layernorm_before."),
    (r"\.layer_norm_2\.", ".layernorm_after."),
]
# installed transformers' names -> ours (k_proj / v_proj are concatenated into kv separately)
_HF_RENAMES = [
    (r"\.patch_embeddings\.proj\.", ".patch_embed.proj."), (r"\.patch_embeddings\.layer_norm\.", ".patch_embed.norm."),
    (r"^(stages\.\d+)\.layer_norm\.", r"\1.norm."), (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."), (r"\.attention\.q_proj\.", ".attn.q."), (r"\.attention\.o_proj\.", ".attn.proj."),
    (r"\.attention\.sequence_reduction\.sequence_reduction\.", ".attn.sr."),
    (r"\.attention\.sequence_reduction\.layer_norm\.", ".attn.sr_norm."), (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
]


def convert_transformers(sd: dict) -> dict:
    """transformers Segformer encoder keys, ``segformer.encoder.`` (Hub files) or ``segformer.``
    (installed transformers' ``state_dict()``) already stripped."""
    canon = {}
    for k, v in sd.items():
        for pattern, repl in _HF_HUB_RENAMES:
            k = re.sub(pattern, repl, k)
        canon[k] = v
    out = {}
    for k, v in canon.items():
        m = re.match(r"^(.*)\.attention\.([kv])_proj\.(weight|bias)$", k)
        if m:
            pair = {p: canon.get(f"{m.group(1)}.attention.{p}_proj.{m.group(3)}") for p in "kv"}
            if pair["k"] is None or pair["v"] is None:
                out[k] = v  # unpaired: left for the strict load to name
            elif m.group(2) == "k":
                out[f"{m.group(1)}.attn.kv.{m.group(3)}"] = torch.cat([pair["k"], pair["v"]], dim=0)
            continue
        for pattern, repl in _HF_RENAMES:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out


_IMAGENET_CLASSIFIER = re.compile(r"^classifier\.(weight|bias)$")


def segformer_encoder(sd: dict) -> dict:
    """The encoder part of a transformers Segformer / MiT state dict, prefix stripped: keys are
    ``segformer.encoder.*`` in Hub files, ``segformer.*`` in transformers 5's ``state_dict()``."""
    return {re.sub(r"^encoder\.", "", k[len("segformer."):]): v for k, v in sd.items() if k.startswith("segformer.")}


def convert_timm(sd: dict) -> dict:
    """MiT's ImageNet classifier -> ours. timm has no MiT: its ImageNet weights are transformers'
    ``SegformerForImageClassification`` (``nvidia/mit-b*``), whose encoder (``segformer.encoder.*`` in
    Hub files, ``segformer.*`` in the installed transformers' ``state_dict()``) converts as
    :func:`convert_transformers`; the classifier (``classifier.*``) is dropped and any other key
    stays (the strict load names it)."""
    rest = {k: v for k, v in sd.items() if not k.startswith("segformer.") and not _IMAGENET_CLASSIFIER.match(k)}
    return {**convert_transformers(segformer_encoder(sd)), **rest}


# ---- ImageNet weights ---------------------------------------------------------------------------
def imagenet_weights(cfg: dict) -> dict:
    """MiT-b0..b5's ImageNet classifiers: transformers' ``SegformerForImageClassification`` repos."""
    repo = _PRETRAINED.get((tuple(cfg["embed_dims"]), tuple(cfg["depths"])))
    same = (tuple(cfg["num_heads"]) == (1, 2, 5, 8) and tuple(cfg["sr_ratios"]) == (8, 4, 2, 1)
            and float(cfg.get("mlp_ratio", 4.0)) == 4.0 and tuple(cfg.get("patch_sizes", (7, 3, 3, 3))) == (7, 3, 3, 3)
            and tuple(cfg.get("strides", (4, 2, 2, 2))) == (4, 2, 2, 2))
    if repo is None or not same:
        raise ValueError(f"no ImageNet weights for MiT with embed_dims={list(cfg['embed_dims'])}, "
                         f"depths={list(cfg['depths'])} (known: MiT-b0..b5)")
    return {"sources": [{"hf_hub_id": repo, "filename": f} for f in _HUB_FILES],
            "label": f"MiT ImageNet weights ({repo})"}


# ---- registration -----------------------------------------------------------------------------
@register_backbone("mit")
def mit(embed_dims, num_heads, depths, sr_ratios, patch_sizes=(7, 3, 3, 3), strides=(4, 2, 2, 2), mlp_ratio=4.0,
        qkv_bias=True, drop_path_rate=0.0, flavor="sssegmentation") -> MixVisionTransformer:
    return MixVisionTransformer(embed_dims, num_heads, depths, sr_ratios, patch_sizes, strides, mlp_ratio, qkv_bias,
                                drop_path_rate, flavor)
