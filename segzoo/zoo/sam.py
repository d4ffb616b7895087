"""Records of Segment Anything (Meta's ViT-B/L/H) and MobileSAM (TinyViT): promptable, class-agnostic
mask predictors (``num_classes`` 0, architecture ``"sam"``, trained on SA-1B).

Architectures: Meta's ``segment_anything/build_sam.py`` (ViT-B/L/H: embed dim, depth, heads, global
attention blocks; window 14, patch 16, 1024 input, prompt dim 256, mask-decoder depth 2, MLP 2048,
8 heads) and MobileSAM's ``build_sam_vit_t`` (TinyViT-5M dims [64, 128, 160, 320], depths
[2, 2, 6, 2], heads [2, 4, 5, 10], windows [7, 7, 14, 7]); the same values are in the
``facebook/sam-vit-*`` repos' ``config.json`` (vision ``hidden_size`` 768/1024/1280,
``num_hidden_layers`` 12/24/32, ``global_attn_indexes``). Weights: Meta's release URLs (format
``sam``), the transformers conversions on the Hub (format ``transformers``) and MobileSAM's
``weights/mobile_sam.pt`` in its GitHub repository (format ``mobilesam``).

Torch-free.
"""
from __future__ import annotations

from ..registry import ModelRecord, register

__all__ = ["RECORDS", "ARCHS", "SAM_NORMALIZATION"]

SAM_NORMALIZATION = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
_PAPER = {"citation": "Kirillov et al., Segment Anything, ICCV 2023 (arXiv:2304.02643)",
          "url": "https://arxiv.org/abs/2304.02643"}
_MOBILE_PAPER = {"citation": "Zhang et al., Faster Segment Anything: Towards Lightweight SAM for Mobile Applications "
                             "(arXiv:2306.14289)", "url": "https://arxiv.org/abs/2306.14289"}

# variant -> (embed_dim, depth, num_heads, global_attn_indexes, Meta's file, Hub repo)
_VIT = {
    "base": (768, 12, 12, [2, 5, 8, 11], "sam_vit_b_01ec64.pth", "facebook/sam-vit-base"),
    "large": (1024, 24, 16, [5, 11, 17, 23], "sam_vit_l_0b3195.pth", "facebook/sam-vit-large"),
    "huge": (1280, 32, 16, [7, 15, 23, 31], "sam_vit_h_4b8939.pth", "facebook/sam-vit-huge"),
}
_META_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_MOBILESAM_URL = "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"

_PROMPT = {"embed_dim": 256, "mask_in_chans": 16}
_DECODER = {"num_multimask_outputs": 3, "depth": 2, "num_heads": 8, "mlp_dim": 2048, "iou_head_depth": 3,
            "iou_head_hidden_dim": 256}
# test-time protocol: resize the long side to 1024 (keep ratio), normalise, zero-pad to 1024 x 1024
_INFERENCE = {"mode": "whole", "crop_size": None, "stride": None, "scales": [1.0], "flip": False,
              "probs_before_resize": False, "resize": {"size": [1024, 1024], "keep_ratio": True}, "promptable": True}


def _arch(encoder: dict) -> dict:
    return {"segmentor": "sam", "image_encoder": encoder, "prompt_encoder": dict(_PROMPT),
            "mask_decoder": dict(_DECODER), "pixel_mean": list(SAM_NORMALIZATION["mean"]),
            "pixel_std": list(SAM_NORMALIZATION["std"]), "num_classes": 0}


def _vit_encoder(v: str) -> dict:
    dim, depth, heads, glob = _VIT[v][:4]
    return {"type": "vit", "img_size": 1024, "patch_size": 16, "embed_dim": dim, "depth": depth, "num_heads": heads,
            "global_attn_indexes": list(glob), "window_size": 14, "mlp_ratio": 4.0, "use_rel_pos": True}


_TINY_VIT_5M = {"type": "tiny_vit", "img_size": 1024, "embed_dims": [64, 128, 160, 320], "depths": [2, 2, 6, 2],
                "num_heads": [2, 4, 5, 10], "window_sizes": [7, 7, 14, 7], "mlp_ratio": 4.0,
                "mbconv_expand_ratio": 4.0, "local_conv_size": 3}

#: the published networks by their upstream names (Meta's vit_b/l/h, MobileSAM's vit_t)
ARCHS = {"vit_b": _arch(_vit_encoder("base")), "vit_l": _arch(_vit_encoder("large")),
         "vit_h": _arch(_vit_encoder("huge")), "vit_t": _arch(_TINY_VIT_5M)}


def _records() -> list[ModelRecord]:
    recs = []
    for v, (dim, depth, heads, glob, fname, repo) in _VIT.items():
        enc = _vit_encoder(v)
        weights = ({"url": _META_URL + fname, "filename": fname, "format": "sam"},
                   {"hf_hub_id": repo, "filename": "model.safetensors", "revision": "main", "format": "transformers"},
                   {"hf_hub_id": repo, "filename": "pytorch_model.bin", "revision": "main", "format": "transformers"})
        recs.append(ModelRecord(
            name=f"sam_vit_{v}", architecture="sam", backbone=f"vit_{v}", dataset="sa1b", num_classes=0,
            arch=_arch(enc), crop_size=(1024, 1024), inference=dict(_INFERENCE), normalization=dict(SAM_NORMALIZATION),
            weights=weights,
            source={"project": "segment_anything", "repo_id": repo,
                    "url": "https://github.com/facebookresearch/segment-anything", "checkpoint": fname,
                    "paper": _PAPER}))
    enc = dict(_TINY_VIT_5M)
    recs.append(ModelRecord(
        name="mobilesam_tinyvit", architecture="sam", backbone="tiny_vit_5m", dataset="sa1b", num_classes=0,
        arch=_arch(enc), crop_size=(1024, 1024), inference=dict(_INFERENCE), normalization=dict(SAM_NORMALIZATION),
        weights=({"url": _MOBILESAM_URL, "filename": "mobile_sam.pt", "format": "mobilesam"},),
        source={"project": "MobileSAM", "url": "https://github.com/ChaoningZhang/MobileSAM",
                "checkpoint": "mobile_sam.pt", "paper": _MOBILE_PAPER}))
    return recs


RECORDS = _records()

for _r in RECORDS:
    register(_r)
