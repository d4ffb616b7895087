"""Records for transformers-format checkpoints on the Hugging Face Hub: UperNet (Swin, ConvNeXt)
from openmmlab and Segformer (MiT-b0..b5) from nvidia.

Architectures follow each repo's config.json; test-time protocols follow the mmsegmentation
configs those checkpoints were converted from. The repos report no metric themselves: mIoU
(single scale, and ``mIoU_ms`` with multi-scale + flip) and the training recipe come from the
published tables and configs cited in ``data/transformers_hub.json`` (``source.metrics_source``,
``recipe.source``) for the checkpoint each repo was converted from.
"""
from __future__ import annotations

from ..registry import ModelRecord, register
from . import dataset_meta, load_data

_IMAGENET = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")

_SWIN = {  # variant -> (embed_dim, depths, num_heads, window_size)
    "tiny": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7), "small": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7),
    "base": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12), "large": (192, [2, 2, 18, 2], [6, 12, 24, 48], 12),
}
_CONVNEXT = {  # variant -> (depths, hidden sizes, test crop)
    "tiny": ([3, 3, 9, 3], [96, 192, 384, 768], 512), "small": ([3, 3, 27, 3], [96, 192, 384, 768], 512),
    "base": ([3, 3, 27, 3], [128, 256, 512, 1024], 512), "large": ([3, 3, 27, 3], [192, 384, 768, 1536], 640),
    "xlarge": ([3, 3, 27, 3], [256, 512, 1024, 2048], 640)}
_MIT = {  # variant -> (embed_dims, depths, decoder channels)
    "b0": ([32, 64, 160, 256], [2, 2, 2, 2], 256), "b1": ([64, 128, 320, 512], [2, 2, 2, 2], 256),
    "b2": ([64, 128, 320, 512], [3, 4, 6, 3], 768), "b3": ([64, 128, 320, 512], [3, 4, 18, 3], 768),
    "b4": ([64, 128, 320, 512], [3, 8, 27, 3], 768), "b5": ([64, 128, 320, 512], [3, 6, 40, 3], 768),
}


def _weights(repo_id: str) -> tuple:
    return tuple({"hf_hub_id": repo_id, "filename": f, "revision": "main", "format": "transformers"} for f in _HUB_FILES)


def _uper_arch(backbone: dict, num_classes: int) -> dict:
    return {"segmentor": "upernet", "backbone": backbone,
            "decode_head": {"type": "uper", "in_index": [0, 1, 2, 3], "pool_scales": [1, 2, 3, 6], "channels": 512,
                            "dropout": 0.1},
            "aux_heads": [{"type": "fcn", "in_index": 2, "channels": 256, "num_convs": 1, "dropout": 0.1}],
            "num_classes": num_classes, "align_corners": False}


def _inference(mode: str, crop: int | None, resize: list) -> dict:
    return {"mode": mode, "crop_size": [crop, crop] if crop else None,
            "stride": [crop * 2 // 3, crop * 2 // 3] if crop else None, "scales": [1.0], "flip": False,
            "probs_before_resize": False, "resize": {"size": resize, "keep_ratio": True}}


def _published(name: str, repo: str) -> dict:
    """metrics, source and recipe of a Hub record from its published tables (data/transformers_hub.json)."""
    pub = load_data("transformers_hub")[name]
    if pub["repo_id"] != repo:
        raise ValueError(f"data/transformers_hub.json: {name} is {pub['repo_id']}, expected {repo}")
    source = {"project": "transformers", "repo_id": repo, "converted_from": pub["converted_from"],
              "metrics_source": pub["metrics_source"]}
    return {"metrics": dict(pub["metrics"]), "source": source, "recipe": pub["recipe"]}


def _records() -> list[ModelRecord]:
    recs = []
    ade = dataset_meta("ade20k")
    for v, (dim, depths, heads, win) in _SWIN.items():
        bb = {"type": "swin", "embed_dim": dim, "depths": depths, "num_heads": heads, "window_size": win,
              "mlp_ratio": 4.0, "qkv_bias": True, "patch_size": 4, "drop_path_rate": 0.3}
        repo = f"openmmlab/upernet-swin-{v}"
        recs.append(ModelRecord(
            name=f"upernet_swin_{v}_ade20k", architecture="upernet", backbone=f"swin_{v}", dataset="ade20k",
            num_classes=150, arch=_uper_arch(bb, 150), class_names=tuple(ade["class_names"]), crop_size=(512, 512),
            inference=_inference("whole", None, [2048, 512]), normalization=_IMAGENET, weights=_weights(repo),
            **_published(f"upernet_swin_{v}_ade20k", repo)))
    for v, (depths, dims, crop) in _CONVNEXT.items():
        bb = {"type": "convnext", "depths": list(depths), "dims": list(dims), "layer_scale_init_value": 1.0,
              "drop_path_rate": 0.4}
        repo = f"openmmlab/upernet-convnext-{v}"
        recs.append(ModelRecord(
            name=f"upernet_convnext_{v}_ade20k", architecture="upernet", backbone=f"convnext_{v}", dataset="ade20k",
            num_classes=150, arch=_uper_arch(bb, 150), class_names=tuple(ade["class_names"]), crop_size=(crop, crop),
            inference=_inference("slide", crop, [2048, crop]), normalization=_IMAGENET, weights=_weights(repo),
            **_published(f"upernet_convnext_{v}_ade20k", repo)))
    for v, (dims, depths, channels) in _MIT.items():
        bb = {"type": "mit", "embed_dims": dims, "num_heads": [1, 2, 5, 8], "depths": depths, "sr_ratios": [8, 4, 2, 1],
              "patch_sizes": [7, 3, 3, 3], "strides": [4, 2, 2, 2], "mlp_ratio": 4.0, "qkv_bias": True,
              "drop_path_rate": 0.1, "flavor": "transformers"}
        for dataset, repo, crop, mode, resize in (
            ("ade20k", f"nvidia/segformer-{v}-finetuned-ade-{640 if v == 'b5' else 512}-{640 if v == 'b5' else 512}",
             640 if v == "b5" else 512, "whole", [2048, 640 if v == "b5" else 512]),
            ("cityscapes", f"nvidia/segformer-{v}-finetuned-cityscapes-1024-1024", 1024, "slide", [2048, 1024]),
        ):
            meta = dataset_meta(dataset)
            n = meta["num_classes"]
            arch = {"segmentor": "segformer", "backbone": bb,
                    "decode_head": {"type": "segformer", "in_index": [0, 1, 2, 3], "proj": "linear",
                                    "channels": channels, "dropout": 0.1},
                    "aux_heads": [], "num_classes": n, "align_corners": False}
            inf = _inference(mode, crop if mode == "slide" else None, resize)
            if mode == "slide":
                inf["stride"] = [768, 768]
            recs.append(ModelRecord(
                name=f"segformer_mit_{v}_{dataset}", architecture="segformer", backbone=f"mit_{v}", dataset=dataset,
                num_classes=n, arch=arch, class_names=tuple(meta["class_names"]), crop_size=(crop, crop),
                inference=inf, normalization=_IMAGENET, weights=_weights(repo),
                **_published(f"segformer_mit_{v}_{dataset}", repo)))
    return recs


RECORDS = _records()
for _r in RECORDS:
    register(_r)
