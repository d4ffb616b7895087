"""Foreign SAM checkpoints -> segzoo's SAM keys (which are Meta's ``segment_anything`` keys).

Layouts: ``sam`` (Meta's ``sam_vit_{b,l,h}_*.pth``; SSSegmentation's SAM loads these same files and has
the same keys), ``mobilesam`` (MobileSAM's ``mobile_sam.pt``: Meta's keys with a TinyViT encoder and
its unused ImageNet classifier ``image_encoder.norm_head``/``image_encoder.head``; SSSegmentation's
MobileSAM has the same keys without it), ``transformers`` (``SamModel``, ``facebook/sam-vit-*``).
A ``{"model": sd}`` / ``{"state_dict": sd}`` wrapper (SSSegmentation's saved checkpoints) and a
``module.`` prefix are taken off first.
"""
from __future__ import annotations

import re

__all__ = ["detect_format", "convert_state_dict", "convert_transformers", "unwrap", "SAM_FORMATS"]

SAM_FORMATS = ("sam", "mobilesam", "transformers")


def unwrap(sd: dict) -> dict:
    """The state dict inside a ``{"model": ...}`` or ``{"state_dict": ...}`` checkpoint, ``module.`` stripped."""
    for key in ("model", "state_dict"):
        if key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def detect_format(sd: dict) -> str | None:
    """``"sam"``, ``"mobilesam"`` or ``"transformers"`` for a SAM checkpoint (wrapped or not), else None."""
    keys = list(unwrap(sd))
    if any(k.startswith("vision_encoder.") for k in keys) and any(k.startswith("mask_decoder.") for k in keys):
        return "transformers"
    if any(k.startswith("image_encoder.") for k in keys) and any(k.startswith("mask_decoder.") for k in keys):
        return "mobilesam" if any(k.startswith("image_encoder.layers.") for k in keys) else "sam"
    return None


_TRANSFORMERS_RULES = [  # (pattern, replacement), applied in order, first match wins
    (r"^shared_image_embedding\.positional_embedding$", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"^vision_encoder\.patch_embed\.projection\.", "image_encoder.patch_embed.proj."),
    (r"^vision_encoder\.pos_embed$", "image_encoder.pos_embed"),
    (r"^vision_encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"image_encoder.blocks.\1.norm\2."),
    (r"^vision_encoder\.layers\.(\d+)\.", r"image_encoder.blocks.\1."),
    (r"^vision_encoder\.neck\.conv1\.", "image_encoder.neck.0."),
    (r"^vision_encoder\.neck\.layer_norm1\.", "image_encoder.neck.1."),
    (r"^vision_encoder\.neck\.conv2\.", "image_encoder.neck.2."),
    (r"^vision_encoder\.neck\.layer_norm2\.", "image_encoder.neck.3."),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
    (r"^prompt_encoder\.point_embed\.", "prompt_encoder.point_embeddings."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.layer_norm(\d)\.", r"mask_decoder.transformer.layers.\1.norm\2."),
    (r"^mask_decoder\.transformer\.layer_norm_final_attn\.", "mask_decoder.transformer.norm_final_attn."),
    (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
]
_FEEDFORWARD = re.compile(r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\."
                          r"(proj_in|proj_out|layers\.(\d+))\.(weight|bias)$")


def convert_transformers(sd: dict) -> dict:
    """transformers ``SamModel`` keys -> segzoo's. Its feed-forward heads (``proj_in``, ``layers.i``,
    ``proj_out``) become ``layers.0 .. layers.n-1``; the prompt encoder's copy of the tied random-Fourier
    matrix is dropped (``shared_image_embedding``'s is kept)."""
    sd = unwrap(sd)
    depth: dict = {}
    for k in sd:
        m = _FEEDFORWARD.match(k)
        if m and m.group(3) is not None:
            depth[m.group(1)] = max(depth.get(m.group(1), 0), int(m.group(3)) + 1)
    out = {}
    for k, v in sd.items():
        if k == "prompt_encoder.shared_embedding.positional_embedding":
            continue
        m = _FEEDFORWARD.match(k)
        if m:
            head, part, idx, kind = m.groups()
            n = depth.get(head, 0) + 2
            i = 0 if part == "proj_in" else n - 1 if part == "proj_out" else int(idx) + 1
            out[f"{head}.layers.{i}.{kind}"] = v
            continue
        for pattern, repl in _TRANSFORMERS_RULES:
            new, hit = re.subn(pattern, repl, k)
            if hit:
                out[new] = v
                break
        else:
            out[k] = v
    return out


def convert_state_dict(sd: dict, arch: dict | None = None, fmt: str | None = None) -> tuple[dict, str]:
    """(segzoo state dict, format) of any SAM checkpoint layout (see the module docstring)."""
    fmt = fmt or detect_format(sd)
    if fmt == "transformers":
        return convert_transformers(sd), fmt
    if fmt in ("sam", "mobilesam", "sssegmentation", "segzoo"):
        drop = ("image_encoder.norm_head.", "image_encoder.head.")
        derived = ("pixel_mean", "pixel_std", ".attention_bias_idxs", ".ab")  # non-persistent buffers
        out = {k: v for k, v in unwrap(sd).items() if not k.startswith(drop) and not k.endswith(derived)}
        return out, fmt
    raise ValueError(f"not a SAM checkpoint layout ({fmt!r}); known: {', '.join(SAM_FORMATS)}")
