"""Swin Transformer (tiny .. large) for dense prediction, on timm's Swin building blocks.

Both references compute the same network: SSSegmentation's ``SwinTransformer`` (mmseg's) and
transformers' ``SwinBackbone`` (which always partitions into full windows, so a stage smaller
than the window keeps its window size and its shift). On inputs that are not multiples of the
patch size, of 2 or of the window, both pad at the bottom/right: the image to the patch size,
odd maps before patch merging, and the normalised tokens to the window size *before* the cyclic
shift, with the shift mask computed on the padded map (padded tokens are attended to, not
masked). timm's ``SwinTransformerBlock`` shifts before it pads, which gives different results on
such inputs, so the block and stage below are ours; the patch embedding, window attention, MLP
and patch merging are timm's, and the parameter names follow timm's ``SwinTransformer``, so timm's
ImageNet weights load as they are. One LayerNorm per output stage (``out_norms``) is added, as in
both references, which do not differ in behaviour: one configuration serves both.

Patch merging concatenates the 2x2 neighbours in timm's / transformers' order; SSSegmentation's
``nn.Unfold`` order is converted in :func:`convert_sssegmentation`.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed
from timm.models.swin_transformer import PatchMerging, WindowAttention

from ..foreign import check_defaults, rename_key, ssseg_backbone
from ..layers import init_linear_trunc_normal
from .base import add_fresh_out_norms, register_backbone

__all__ = ["SwinTransformer", "swin", "from_ssseg", "convert_sssegmentation", "convert_transformers", "convert_timm", "imagenet_weights",
           "adapt_imagenet"]

# (embed_dim, depths, window_size) -> timm weights for ``pretrained=True`` without ``pretrained_tag``:
# those the references fine-tune from (ImageNet-1k at 224 for tiny/small, ImageNet-22k at 384 for base/large).
_TIMM_WEIGHTS = {
    (96, (2, 2, 6, 2), 7): "swin_tiny_patch4_window7_224.ms_in1k",
    (96, (2, 2, 18, 2), 7): "swin_small_patch4_window7_224.ms_in1k",
    (128, (2, 2, 18, 2), 7): "swin_base_patch4_window7_224.ms_in22k",
    (128, (2, 2, 18, 2), 12): "swin_base_patch4_window12_384.ms_in22k",
    (192, (2, 2, 18, 2), 7): "swin_large_patch4_window7_224.ms_in22k",
    (192, (2, 2, 18, 2), 12): "swin_large_patch4_window12_384.ms_in22k",
}


def _window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``ws`` -> (B * H/ws * W/ws, ws * ws, C)."""
    b, h, w, c = x.shape
    return x.view(b, h // ws, ws, w // ws, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)


def _window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    c = windows.shape[-1]
    return windows.view(-1, h // ws, w // ws, ws, ws, c).transpose(2, 3).reshape(-1, h, w, c)


def _shift_mask(h: int, w: int, ws: int, shift: int, device, dtype) -> torch.Tensor:
    """Additive mask (num_windows, ws*ws, ws*ws) of the shifted windows on a padded (h, w) map:
    tokens of different regions (3 per axis, split at -ws and -shift) do not attend to each other."""
    def regions(n):
        idx = torch.arange(n, device=device)
        return (idx >= n - ws).long() + (idx >= n - shift).long()
    labels = (regions(h)[:, None] * 3 + regions(w)[None, :])[None, :, :, None]
    labels = _window_partition(labels, ws).squeeze(-1)  # (nW, ws*ws)
    differ = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(differ.shape, device=device, dtype=dtype).masked_fill_(differ, -100.0)


class SwinBlock(nn.Module):
    """(Shifted) window attention + MLP, pre-norm, on (B, H, W, C) tokens of any H, W."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: bool, mlp_ratio: float, qkv_bias: bool,
                 drop_path: float):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads=num_heads, window_size=window_size, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws, shift = self.window_size, self.shift_size
        # pad first, then shift: the order of both references
        x = F.pad(x, (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))
        hp, wp = x.shape[1:3]
        mask = None
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            mask = _shift_mask(hp, wp, ws, shift, x.device, x.dtype)
        x = _window_reverse(self.attn(_window_partition(x, ws), mask=mask), ws, hp, wp)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x[:, :h, :w, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self._attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """Optional 2x2 patch merging (every stage but the first), then ``depth`` blocks whose odd
    members shift their windows by half a window."""

    def __init__(self, dim: int, out_dim: int, depth: int, downsample: bool, num_heads: int, window_size: int,
                 mlp_ratio: float, qkv_bias: bool, drop_path: list[float]):
        super().__init__()
        self.downsample = PatchMerging(dim, out_dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinBlock(out_dim, num_heads, window_size, i % 2 == 1, mlp_ratio, qkv_bias, drop_path[i])
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class SwinTransformer(nn.Module):
    """Swin backbone: ``forward(x)`` returns the four stage outputs (strides p, 2p, 4p, 8p for patch
    size p), each normalised by its ``out_norms`` LayerNorm, as NCHW tensors. Any input size."""
    frozen_inference_pays = False  # window attention: the frozen copy ran 0.90x eager (512x512)

    def __init__(self, embed_dim: int = 96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size: int = 7,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, patch_size: int = 4, drop_path_rate: float = 0.0,
                 in_chans: int = 3):
        super().__init__()
        n = len(depths)
        dims = [int(embed_dim * 2 ** i) for i in range(n)]
        self.in_chans = in_chans
        self.patch_embed = PatchEmbed(img_size=None, patch_size=patch_size, in_chans=in_chans, embed_dim=dims[0],
                                      norm_layer=nn.LayerNorm, output_fmt="NHWC", strict_img_size=False,
                                      dynamic_img_pad=True)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.Sequential(*[
            SwinStage(dims[max(i - 1, 0)], dims[i], depths[i], i > 0, num_heads[i], window_size, mlp_ratio, qkv_bias,
                      dpr[sum(depths[:i]):sum(depths[:i + 1])]) for i in range(n)])
        self.out_norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        self.out_channels = dims
        self.reductions = [patch_size * 2 ** i for i in range(n)]
        self.min_input_size = 1  # pads to the patch and window sizes itself
        self.apply(init_linear_trunc_normal)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"Swin expects a (N, {self.in_chans}, H, W) tensor, got shape {tuple(x.shape)}")
        x = self.patch_embed(x)
        outs = []
        for layer, norm in zip(self.layers, self.out_norms):
            x = layer(x)
            outs.append(norm(x).permute(0, 3, 1, 2).contiguous())
        return outs


@register_backbone("swin")
def swin(embed_dim, depths, num_heads, window_size, mlp_ratio: float = 4.0, qkv_bias: bool = True,
         patch_size: int = 4, drop_path_rate: float = 0.0) -> nn.Module:
    embed_dim, window_size, patch_size = int(embed_dim), int(window_size), int(patch_size)
    depths, num_heads = tuple(int(d) for d in depths), tuple(int(h) for h in num_heads)
    if len(depths) != 4 or len(num_heads) != 4:
        raise ValueError(f"Swin needs 4 depths and 4 num_heads, got depths={list(depths)}, "
                         f"num_heads={list(num_heads)}")
    for i, h in enumerate(num_heads):
        if (embed_dim * 2 ** i) % h:
            raise ValueError(f"Swin stage {i} width {embed_dim * 2 ** i} is not divisible by num_heads {h}")
    if window_size < 2:
        raise ValueError(f"Swin window_size must be >= 2, got {window_size}")
    model = SwinTransformer(embed_dim, depths, num_heads, window_size, float(mlp_ratio), bool(qkv_bias), patch_size,
                            float(drop_path_rate))
    return model


def imagenet_weights(cfg: dict) -> dict:
    """timm's ImageNet classifier the references fine-tune from (``pretrained_tag`` picks another one)."""
    key = (int(cfg["embed_dim"]), tuple(int(d) for d in cfg["depths"]), int(cfg["window_size"]))
    name = cfg.get("pretrained_tag") or _TIMM_WEIGHTS.get(key)
    if name is None:
        raise ValueError(f"no ImageNet weights known for Swin embed_dim={key[0]}, depths={list(key[1])}, "
                         f"window_size={key[2]}; pass pretrained_tag")
    return {"timm": name}


def adapt_imagenet(sd: dict, model: nn.Module) -> dict:
    """Resize relative position bias tables made for another window size (bicubic, as SSSegmentation
    does when it starts a window-12 model from window-7 ImageNet weights)."""
    from timm.layers import resize_rel_pos_bias_table_simple
    own = model.state_dict()
    ws = model.layers[0].blocks[0].window_size
    for k, v in sd.items():
        if k.endswith("relative_position_bias_table") and k in own and own[k].shape != v.shape \
                and own[k].shape[1] == v.shape[1]:
            sd[k] = resize_rel_pos_bias_table_simple(v, new_window_size=(ws, ws), new_bias_shape=own[k].shape)
    return sd


# ---- SSSegmentation config ---------------------------------------------------------------------------
@ssseg_backbone("SwinTransformer")
def from_ssseg(bb: dict) -> dict:
    """SSSegmentation ``SwinTransformer`` config -> ``arch["backbone"]``."""
    check_defaults(bb, use_abs_pos_embed=False, patch_norm=True, in_channels=3, qk_scale=None, drop_rate=0.0,
                   attn_drop_rate=0.0)
    return {"type": "swin", "embed_dim": int(bb["embed_dims"]), "depths": list(bb["depths"]),
            "num_heads": list(bb["num_heads"]), "window_size": int(bb["window_size"]),
            "mlp_ratio": float(bb.get("mlp_ratio", 4)), "qkv_bias": bool(bb.get("qkv_bias", True)),
            "patch_size": int(bb.get("patch_size", 4)), "drop_path_rate": float(bb.get("drop_path_rate", 0.0))}


# ---- foreign state dicts -> ours -----------------------------------------------------------------
def _unfold_to_timm_order(v: torch.Tensor) -> torch.Tensor:
    """Last dim 4*C in ``nn.Unfold`` order (channel-major, then (0,0),(0,1),(1,0),(1,1)) -> timm's
    order (neighbour-major: (0,0),(1,0),(0,1),(1,1), then channel)."""
    lead = v.shape[:-1]
    return v.reshape(*lead, -1, 4)[..., [0, 2, 1, 3]].transpose(-1, -2).reshape(*lead, -1)


_BLK = r"layers.\1.blocks.\2."
_SSSEG_RULES = [
    (r"^patch_embed\.projection\.", "patch_embed.proj."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.", _BLK + "attn."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.0\.0\.", _BLK + "mlp.fc1."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.1\.", _BLK + "mlp.fc2."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", _BLK),
    (r"^norm(\d+)\.", r"out_norms.\1."),
]


def convert_sssegmentation(sd: dict) -> dict:
    """SSSegmentation ``SwinTransformer`` keys (``backbone_net.`` stripped) -> ours. Patch merging
    moves from the end of stage i to the start of stage i+1 and its 2x2 neighbours are reordered;
    ``relative_position_index`` (derived from the window size) is dropped."""
    out = {}
    for k, v in sd.items():
        if k.endswith("relative_position_index"):
            continue
        m = re.match(r"^stages\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)$", k)
        if m:
            out[f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}.{m.group(3)}"] = _unfold_to_timm_order(v)
            continue
        out[rename_key(k, _SSSEG_RULES) or k] = v
    return out


_HF_RULES = [  # Hub file names and the installed transformers' state_dict() names
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^embeddings\.norm\.", "patch_embed.norm."),
    (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_before\.", _BLK + "norm1."),
    (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_after\.", _BLK + "norm2."),
    (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.(?:self|relative_position_bias)\."
     r"relative_position_bias_table$", _BLK + "attn.relative_position_bias_table"),
    (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.(?:output\.dense|o_proj)\.", _BLK + "attn.proj."),
    (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.(?:intermediate\.dense|mlp\.fc1)\.", _BLK + "mlp.fc1."),
    (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.(?:output\.dense|mlp\.fc2)\.", _BLK + "mlp.fc2."),
]
_HF_QKV = re.compile(r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.(?:self\.(query|key|value)|([qkv])_proj)\."
                     r"(weight|bias)$")


def convert_transformers(sd: dict) -> dict:
    """transformers ``SwinBackbone`` keys (``backbone.`` stripped) -> ours. Accepts the Hub files'
    names (``embeddings.*``, ``attention.self.query``, ``intermediate.dense``) and those of the installed
    transformers' ``state_dict()`` (``swin.embeddings.*``, ``attention.q_proj``, ``mlp.fc1``). Separate
    q/k/v projections are concatenated; ``relative_position_index`` (derived) and ``swin.layernorm``
    (the classifier's final norm, unused by the backbone) are dropped."""
    out, qkv = {}, {}
    for k, v in sd.items():
        k = k[len("swin."):] if k.startswith("swin.") else k
        if k.endswith("relative_position_index") or k.startswith("layernorm."):
            continue
        m = _HF_QKV.match(k)
        if m:
            which = "qkv".index((m.group(3) or m.group(4))[0])
            qkv.setdefault((int(m.group(1)), int(m.group(2)), m.group(5)), [None] * 3)[which] = v
            continue
        m = re.match(r"^encoder\.layers\.(\d+)\.downsample\.(.*)$", k)
        if m:
            out[f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"] = v
            continue
        m = re.match(r"^hidden_states_norms\.stage(\d+)\.(.*)$", k)
        if m and int(m.group(1)) >= 1:
            out[f"out_norms.{int(m.group(1)) - 1}.{m.group(2)}"] = v
            continue
        out[rename_key(k, _HF_RULES) or k] = v
    for (i, j, kind), parts in qkv.items():
        key = f"layers.{i}.blocks.{j}.attn.qkv.{kind}"
        if any(p is None for p in parts):
            missing = [n for n, p in zip(("query", "key", "value"), parts) if p is None]
            raise ValueError(f"transformers Swin checkpoint has no {'/'.join(missing)} {kind} for {key}")
        out[key] = torch.cat(parts, 0)
    return out


# the classifier of timm's SwinTransformer (``head.fc``; ``head`` in Microsoft's checkpoints) and its
# final norm, which the backbone replaces by one norm per output stage
_TIMM_CLASSIFIER = re.compile(r"^(head|head\.fc|norm)\.(weight|bias)$")


def convert_timm(sd: dict) -> dict:
    """A timm ``SwinTransformer`` state dict -> ours: the classifier (``head.fc``, final ``norm``) and
    derived buffers are dropped, any other key stays (the strict load names it); the output norms,
    which an ImageNet classifier does not have, get their fresh initialisation (weight 1, bias 0),
    as in the references when they start from ImageNet weights. Original Microsoft checkpoints
    (patch merging at the end of a stage, ``layers.0.downsample``) are moved to timm's layout first."""
    if "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    ms_layout = any(k.startswith("layers.0.downsample.") for k in sd)
    out = {}
    for k, v in sd.items():
        if _TIMM_CLASSIFIER.match(k) or k.endswith(("relative_position_index", "attn_mask")):
            continue
        if ms_layout:
            m = re.match(r"^layers\.(\d+)\.downsample\.(.*)$", k)
            if m:
                k = f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"
        out[k] = v
    return add_fresh_out_norms(out, "layers.{i}.blocks.0.norm1.weight")
