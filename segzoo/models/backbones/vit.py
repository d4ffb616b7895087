"""Vision Transformer (ViT) for dense prediction: SSSegmentation's ``VisionTransformer`` (mmseg's).

Native network on timm's layers: timm's ``PatchEmbed`` (bottom/right zero padding to the patch size,
SSSegmentation's ``patch_pad='corner'``), ``Attention`` and ``Mlp``, with timm's parameter names, so
timm / JAX ViT checkpoints load as they are. timm's ``VisionTransformer`` itself does not compute the
reference's network, hence the block and the model below are ours:

* position embeddings are resized (bilinear, ``align_corners=False``, from the ``img_size`` grid)
  only when the number of tokens differs from the trained one, as in the reference: an input whose
  patch grid has the same number of cells as the ``img_size`` grid but another shape (e.g. 16x64
  patches for ``img_size=512``) uses the embeddings as they are, flattened. timm resizes by shape,
  bicubically;
* drop path (stochastic depth, training only) is on the MLP branch only; the attention branch has
  none (timm's ``Block`` has it on both);
* the outputs are the tokens after the blocks of ``out_indices`` (class token removed, NCHW), the
  final LayerNorm (``final_norm``) applied after the last block only, optionally preceded by the
  embedded tokens (``out_origin``).

SSSegmentation's ``nn.MultiheadAttention`` packs q, k, v in timm's ``qkv`` order; its
``bias=qkv_bias`` also switches the output projection's bias, which is followed here.
"""
from __future__ import annotations

import re
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed
from timm.models.vision_transformer import Attention

from ..foreign import UnsupportedConfig, check_defaults, rename_key, ssseg_backbone
from ..layers import init_linear_trunc_normal
from .base import register_backbone

__all__ = ["VisionTransformer", "vit", "from_ssseg", "convert_sssegmentation", "convert_timm", "imagenet_weights",
           "adapt_imagenet", "resize_pos_embed"]

# (embed_dim, depth, patch_size) -> the ImageNet weights SSSegmentation starts from (its DEFAULT_MODEL_URLS):
# the original JAX ViT-L/16 (ImageNet-21k, fine-tuned on ImageNet-1k at 384), as converted by timm
# ("jx_vit_large_p16_384"; timm 0.9+ only lists the different AugReg weights under vit_large_patch16_384).
_JX_WEIGHTS = {
    (1024, 24, 16): ("https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/"
                     "jx_vit_large_p16_384-b3be5167.pth"),
}


def resize_pos_embed(pos_embed: torch.Tensor, size, grid, mode: str = "bilinear") -> torch.Tensor:
    """(1, 1 + gh*gw, C) embeddings (class token first, then a ``grid`` = (gh, gw) map) -> the class
    token's plus the map resized to ``size`` = (h, w): (1, 1 + h*w, C)."""
    gh, gw = grid
    cls_pos, grid_pos = pos_embed[:, :1], pos_embed[:, -gh * gw:]
    grid_pos = grid_pos.reshape(1, gh, gw, pos_embed.shape[2]).permute(0, 3, 1, 2)
    grid_pos = F.interpolate(grid_pos, size=tuple(size), align_corners=False, mode=mode)
    return torch.cat((cls_pos, grid_pos.flatten(2).transpose(1, 2)), dim=1)


class ViTBlock(nn.Module):
    """Pre-norm multi-head self-attention + MLP; drop path on the MLP branch only."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop: float, attn_drop: float,
                 drop_path: float, norm_eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, proj_bias=qkv_bias, attn_drop=attn_drop,
                              proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """ViT backbone: ``forward(x)`` returns the patch tokens after each block of ``out_indices`` (and
    first the embedded tokens with ``out_origin``) as NCHW maps at stride ``patch_size``. Any input
    size (padded to the patch size; position embeddings resized as the reference does)."""

    def __init__(self, img_size=(512, 512), patch_size: int = 16, embed_dim: int = 1024, depth: int = 24,
                 num_heads: int = 16, mlp_ratio: float = 4.0, out_indices=(9, 14, 19, 23), qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 with_cls_token: bool = True, pre_norm: bool = False, final_norm: bool = False,
                 patch_norm: bool = False, patch_bias: bool = True, out_origin: bool = False,
                 interpolate_mode: str = "bilinear", norm_eps: float = 1e-6, in_chans: int = 3):
        super().__init__()
        self.in_chans, self.patch_size = in_chans, patch_size
        self.grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.with_cls_token, self.out_origin, self.interpolate_mode = with_cls_token, out_origin, interpolate_mode
        self.out_indices = sorted(set(out_indices))
        self.patch_embed = PatchEmbed(img_size=None, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                                      norm_layer=partial(nn.LayerNorm, eps=norm_eps) if patch_norm else None,
                                      output_fmt="NHWC", bias=patch_bias, strict_img_size=False, dynamic_img_pad=True)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1] + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        self.norm_pre = nn.LayerNorm(embed_dim, eps=norm_eps) if pre_norm else nn.Identity()
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            ViTBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i], norm_eps)
            for i in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm else nn.Identity()
        n_out = len(self.out_indices) + int(out_origin)
        self.out_channels = [embed_dim] * n_out
        self.reductions = [patch_size] * n_out
        self.min_input_size = 1  # pads to the patch size itself
        self.apply(init_linear_trunc_normal)

    def _to_map(self, x: torch.Tensor, hw) -> torch.Tensor:
        if self.with_cls_token:
            x = x[:, 1:]
        return x.reshape(x.shape[0], hw[0], hw[1], x.shape[2]).permute(0, 3, 1, 2).contiguous()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"ViT expects a (N, {self.in_chans}, H, W) tensor, got shape {tuple(x.shape)}")
        x = self.patch_embed(x)
        hw = x.shape[1:3]
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x.flatten(1, 2)), dim=1)
        pos = self.pos_embed
        if x.shape[1] != pos.shape[1]:  # by token count, as the reference
            pos = resize_pos_embed(pos, hw, self.grid, self.interpolate_mode)
        x = self.pos_drop(x + pos)
        if not self.with_cls_token:
            x = x[:, 1:]
        x = self.norm_pre(x)
        outs = [self._to_map(x, hw)] if self.out_origin else []
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i == last:
                x = self.norm(x)
            if i in self.out_indices:
                outs.append(self._to_map(x, hw))
        return outs


@register_backbone("vit")
def vit(img_size, patch_size: int = 16, embed_dim: int = 1024, depth: int = 24, num_heads: int = 16,
        mlp_ratio: float = 4.0, out_indices=(9, 14, 19, 23), qkv_bias: bool = True, drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, with_cls_token: bool = True, pre_norm: bool = False,
        final_norm: bool = False, patch_norm: bool = False, patch_bias: bool = True, out_origin: bool = False,
        interpolate_mode: str = "bilinear", norm_eps: float = 1e-6) -> nn.Module:
    """``img_size`` (h, w) or an int: the training crop, which sets the position embedding grid."""
    img_size = (int(img_size), int(img_size)) if isinstance(img_size, (int, float)) else tuple(int(s) for s in img_size)
    patch_size, embed_dim, depth, num_heads = int(patch_size), int(embed_dim), int(depth), int(num_heads)
    out_indices = [int(i) for i in out_indices]
    if embed_dim % num_heads:
        raise ValueError(f"ViT embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
    if any(i < 0 or i >= depth for i in out_indices) or not (out_indices or out_origin):
        raise ValueError(f"ViT out_indices {out_indices} must be block indices in [0, {depth})")
    if interpolate_mode not in ("bilinear", "bicubic"):
        raise ValueError(f"ViT interpolate_mode must be 'bilinear' or 'bicubic', got {interpolate_mode!r}")
    return VisionTransformer(img_size, patch_size, embed_dim, depth, num_heads, float(mlp_ratio), out_indices,
                             bool(qkv_bias), float(drop_rate), float(attn_drop_rate), float(drop_path_rate),
                             bool(with_cls_token), bool(pre_norm), bool(final_norm), bool(patch_norm),
                             bool(patch_bias), bool(out_origin), interpolate_mode, float(norm_eps))


def imagenet_weights(cfg: dict) -> dict:
    """The ImageNet classifier SSSegmentation starts from: ViT-L/16 -> the original JAX ViT-L/16 384
    (ImageNet-21k pre-training, ImageNet-1k fine-tuning; timm's ``jx_vit_large_p16_384`` file).
    ``pretrained_tag`` picks a timm model name instead (e.g. ``vit_large_patch16_384.augreg_in21k_ft_in1k``,
    other weights)."""
    if cfg.get("pretrained_tag"):
        return {"timm": cfg["pretrained_tag"]}
    key = (int(cfg.get("embed_dim", 1024)), int(cfg.get("depth", 24)), int(cfg.get("patch_size", 16)))
    url = _JX_WEIGHTS.get(key)
    if url is None:
        raise ValueError(f"no ImageNet weights known for ViT embed_dim={key[0]}, depth={key[1]}, patch_size={key[2]}; "
                         "pass pretrained_tag (a timm model name)")
    return {"sources": [{"url": url, "filename": url.rsplit("/", 1)[-1]}],
            "label": "ViT-L/16 384 ImageNet weights (JAX)"}


def adapt_imagenet(sd: dict, model: nn.Module) -> dict:
    """An ImageNet classifier's backbone keys -> this model's, as SSSegmentation loads them (its
    non-strict load): the final norm is dropped when the model has none (``final_norm=False``), the patch
    projection's bias when ``patch_bias=False``; a ``norm_pre`` the checkpoint lacks keeps its fresh
    initialisation; position embeddings made for another grid are resized (``interpolate_mode``) to
    the ``img_size`` grid from the square grid they hold."""
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if k in own or not (k.startswith("norm.") or k == "patch_embed.proj.bias")}
    for k in ("norm_pre.weight", "norm_pre.bias"):
        if k in own and k not in sd:
            sd[k] = own[k].detach().clone()
    pos = sd.get("pos_embed")
    if pos is not None and pos.shape != own["pos_embed"].shape:
        side = int((pos.shape[1] - 1) ** 0.5)
        sd["pos_embed"] = resize_pos_embed(pos, model.grid, (side, side), model.interpolate_mode)
    return sd


# ---- SSSegmentation config ---------------------------------------------------------------------------
@ssseg_backbone("VisionTransformer")
def from_ssseg(bb: dict) -> dict:
    """SSSegmentation ``VisionTransformer`` config -> ``arch["backbone"]`` (``structure_type`` only names
    the ImageNet weights, ``use_checkpoint`` only trades memory for time: neither is part of the network)."""
    check_defaults(bb, in_channels=3, patch_pad="corner", output_cls_token=False, num_fcs=2,
                   act_cfg={"type": "GELU"})
    norm = bb.get("norm_cfg", {"type": "LayerNorm", "eps": 1e-6})
    if norm.get("type") != "LayerNorm" or set(norm) - {"type", "eps"}:
        raise UnsupportedConfig(f"VisionTransformer norm_cfg {norm} is not ported (only LayerNorm)")
    mode = bb.get("interpolate_mode", "bilinear")
    if mode not in ("bilinear", "bicubic"):
        raise UnsupportedConfig(f"VisionTransformer interpolate_mode={mode!r} is not ported")
    depth = int(bb.get("num_layers", 12))
    out = bb.get("out_indices", (9, 14, 19, 23))
    if isinstance(out, int):
        out = [depth - 1 if out == -1 else out]
    img = bb.get("img_size", 224)
    img = [int(img), int(img)] if isinstance(img, int) else [int(s) for s in img]
    return {"type": "vit", "img_size": img, "patch_size": int(bb.get("patch_size", 16)),
            "embed_dim": int(bb.get("embed_dims", 768)), "depth": depth, "num_heads": int(bb.get("num_heads", 12)),
            "mlp_ratio": float(bb.get("mlp_ratio", 4)), "out_indices": [int(i) for i in out],
            "qkv_bias": bool(bb.get("qkv_bias", True)), "drop_rate": float(bb.get("drop_rate", 0.0)),
            "attn_drop_rate": float(bb.get("attn_drop_rate", 0.0)),
            "drop_path_rate": float(bb.get("drop_path_rate", 0.0)),
            "with_cls_token": bool(bb.get("with_cls_token", True)), "pre_norm": bool(bb.get("pre_norm", False)),
            "final_norm": bool(bb.get("final_norm", False)), "patch_norm": bool(bb.get("patch_norm", False)),
            "patch_bias": bool(bb.get("patch_bias", True)), "out_origin": bool(bb.get("out_origin", False)),
            "interpolate_mode": mode, "norm_eps": float(norm.get("eps", 1e-5))}


# ---- foreign state dicts -> ours -----------------------------------------------------------------
_SSSEG_RULES = [
    (r"^patch_embed\.projection\.", "patch_embed.proj."),
    (r"^layers\.(\d+)\.ln1\.", r"blocks.\1.norm1."),
    (r"^layers\.(\d+)\.ln2\.", r"blocks.\1.norm2."),
    (r"^layers\.(\d+)\.attn\.attn\.in_proj_(weight|bias)$", r"blocks.\1.attn.qkv.\2"),
    (r"^layers\.(\d+)\.attn\.attn\.out_proj\.", r"blocks.\1.attn.proj."),
    (r"^layers\.(\d+)\.ffn\.layers\.0\.0\.", r"blocks.\1.mlp.fc1."),
    (r"^layers\.(\d+)\.ffn\.layers\.1\.", r"blocks.\1.mlp.fc2."),
    (r"^ln1\.", "norm."),
    (r"^ln_pre\.", "norm_pre."),
]


def convert_sssegmentation(sd: dict) -> dict:
    """SSSegmentation ``VisionTransformer`` keys (``backbone_net.`` stripped) -> ours."""
    return {(rename_key(k, _SSSEG_RULES) or k): v for k, v in sd.items()}


# the classifier of timm's / the JAX VisionTransformer (and the pre-logits layer of ImageNet-21k ones)
_TIMM_CLASSIFIER = re.compile(r"^(head|head\.fc|pre_logits\.fc|fc_norm)\.(weight|bias)$")


def convert_timm(sd: dict) -> dict:
    """A timm ``VisionTransformer`` state dict (the JAX ``jx_*`` files included) -> ours: the classifier is
    dropped, every other key stays (the strict load names it); :func:`adapt_imagenet` fits the rest."""
    if "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    return {k: v for k, v in sd.items() if not _TIMM_CLASSIFIER.match(k)}
