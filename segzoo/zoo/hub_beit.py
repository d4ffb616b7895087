"""Records for transformers-format BEiT checkpoints on the Hugging Face Hub: microsoft/beit-base-finetuned-
ade-640-640 and microsoft/beit-large-finetuned-ade-640-640 (``BeitForSemanticSegmentation``: BEiT
encoder, 4-level feature-to-pyramid neck, UPerNet head, FCN auxiliary head).

Architecture: each repo's config.json, as transformers' conversion script wrote it
(src/transformers/models/beit/convert_beit_unilm_to_pytorch.py: ``use_relative_position_bias=True``,
``image_size=640``, ``num_labels=150``; large: ``hidden_size=1024``, ``intermediate_size=4096``,
``num_hidden_layers=24``, ``num_attention_heads=16``, ``out_indices=[7, 11, 15, 23]``); every other
value is ``BeitConfig``'s default: ``patch_size=16``, ``layer_norm_eps=1e-12``, ``layer_scale_init_value=0.1``,
``use_absolute_position_embeddings=False``, ``use_shared_relative_position_bias=False``,
``out_indices=[3, 5, 7, 11]``, ``pool_scales=[1, 2, 3, 6]``, ``auxiliary_channels=256``,
``auxiliary_num_convs=1``, ``auxiliary_concat_input=False``, ``drop_path_rate=0.1``; the UPerNet
channels are ``hidden_size``. (The same values appear in the published config.json of fine-tunes of
these repos, e.g. awaisyaqoob/beit-augumented-custom-xray2, ``_name_or_path``
microsoft/beit-base-finetuned-ade-640-640.)

``out_indices``: transformers reads feature i of ``config.out_indices`` from ``hidden_states[i - 1]``,
the output of block i - 2 (``hidden_states[0]`` is the embedding), so the blocks it uses are
[1, 3, 5, 9] (base) and [5, 9, 13, 21] (large); those are the records' (segzoo counts blocks from 0).
The original BEiT code these checkpoints were trained with reads blocks [3, 5, 7, 11] and
[7, 11, 15, 23], and its LayerNorms use eps 1e-6: the published mIoU below was measured with the
original network, which the transformers port (and these records, which reproduce it) differ from.

Metrics: microsoft/unilm beit/README.md, "Fine-tuning on ADE20K (semantic segmentation)" table
(the checkpoints beit_{base,large}_patch16_640_pt22k_ft22ktoade20k.pth the Hub repos were converted
from); the repos report none. Recipe: the unilm configs
beit/semantic_segmentation/configs/beit/upernet/upernet_beit_{base_12,large_24}_640_slide_160k_ade20k_pt2ft.py.
"""
from __future__ import annotations

from ..registry import ModelRecord, register
from . import dataset_meta

_IMAGENET = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_UNILM = "https://github.com/microsoft/unilm/blob/master/beit"

# variant -> (hidden_size, num_hidden_layers, num_attention_heads, config out_indices, drop_path_rate (training),
#             mIoU, mIoU ms+flip, lr, layer decay, warmup iters, unilm config)
_VARIANTS = {
    "base": (768, 12, 12, [3, 5, 7, 11], 0.1, 53.6, 54.2, 3e-5, 0.9, 1500,
             "upernet_beit_base_12_640_slide_160k_ade20k_pt2ft.py"),
    "large": (1024, 24, 16, [7, 11, 15, 23], 0.2, 56.7, 57.0, 2e-5, 0.95, 3000,
              "upernet_beit_large_24_640_slide_160k_ade20k_pt2ft.py"),
}


def transformers_out_indices(config_out_indices) -> list[int]:
    """The blocks (from 0) whose outputs ``BeitForSemanticSegmentation`` reads for ``config.out_indices``."""
    out = [int(i) - 2 for i in config_out_indices]
    if min(out) < 0:
        raise ValueError(f"out_indices {list(config_out_indices)} read the embedding output, not a block's")
    return out


def _arch(dim: int, depth: int, heads: int, out_indices: list, drop_path: float) -> dict:
    backbone = {"type": "beit", "img_size": [640, 640], "patch_size": 16, "embed_dim": dim, "depth": depth,
                "num_heads": heads, "mlp_ratio": 4.0, "qkv_bias": "qv", "init_values": 0.1,
                "abs_pos_embed": False, "out_indices": transformers_out_indices(out_indices),
                "layer_norm_eps": 1e-12, "neck": [4, 2, 1, 0.5], "drop_path_rate": drop_path}
    return {"segmentor": "upernet", "backbone": backbone,
            "decode_head": {"type": "uper", "in_index": [0, 1, 2, 3], "pool_scales": [1, 2, 3, 6], "channels": dim,
                            "dropout": 0.1},
            "aux_heads": [{"type": "fcn", "in_index": 2, "channels": 256, "num_convs": 1, "dropout": 0.1}],
            "num_classes": 150, "align_corners": False}


def _records() -> list[ModelRecord]:
    ade = dataset_meta("ade20k")
    recs = []
    for v, (dim, depth, heads, outs, dpr, miou, miou_ms, lr, decay, warmup, config) in _VARIANTS.items():
        repo = f"microsoft/beit-{v}-finetuned-ade-640-640"
        ckpt = f"beit_{v}_patch16_640_pt22k_ft22ktoade20k.pth"
        source = {
            "project": "transformers", "repo_id": repo,
            "converted_from": f"microsoft/unilm BEiT checkpoint {ckpt} "
                              "(transformers' convert_beit_unilm_to_pytorch.py)",
            "metrics_source": {
                "citation": f"microsoft/unilm beit/README.md, 'Fine-tuning on ADE20K (semantic segmentation)' table, "
                            f"row BEiT-{v} (UPerNet, 640x640, 160k; weight {ckpt}): mIoU {miou}, mIoU (ms+flip) "
                            f"{miou_ms}; Bao et al., BEiT: BERT Pre-Training of Image Transformers, ICLR 2022 "
                            f"(arXiv 2106.08254)",
                "url": f"{_UNILM}/README.md",
                "note": "measured with the original network (blocks " + ", ".join(str(i) for i in outs)
                        + ", LayerNorm eps 1e-6); transformers' port reads other blocks and uses eps 1e-12"},
        }
        recipe = {
            "amp": True, "batch_size": 16, "crop_size": [640, 640], "drop_path_rate": dpr, "iterations": 160000,
            "losses": {"loss_cls": {"type": "CrossEntropyLoss", "scale_factor": 1.0},
                       "loss_aux": {"type": "CrossEntropyLoss", "scale_factor": 0.4}},
            "optimizer": {"type": "AdamW", "lr": lr, "betas": [0.9, 0.999], "weight_decay": 0.05,
                          "params_rules": {"type": "LearningRateDecayParamsConstructor", "decay_type": "layer_wise_vit",
                                           "decay_rate": decay, "num_layers": depth}},
            "scheduler": {"type": "PolyScheduler", "power": 1.0, "min_lr": 0.0,
                          "warmup_cfg": {"type": "linear", "iters": warmup, "ratio": 1e-6}},
            "pretrain": f"BEiT-{v} self-supervised on ImageNet-22K, then fine-tuned on ImageNet-22K "
                        f"(beit_{v}_patch16_224_pt22k_ft22k.pth)",
            "train_pipeline": "Resize img_scale (2560,640) ratio_range (0.5,2.0); RandomCrop 640x640 cat_max_ratio "
                              "0.75; RandomFlip 0.5; PhotoMetricDistortion (configs/_base_/datasets/ade20k_640x640.py)",
            "source": {"citation": f"microsoft/unilm beit/semantic_segmentation/configs/beit/upernet/{config} "
                                   "(optimizer, LayerDecayOptimizerConstructor, lr_config, samples_per_gpu x 8 GPUs"
                                   + (" x update_interval 2" if v == "large" else "") + ", use_fp16) + "
                                   "configs/_base_/models/upernet_beit.py (auxiliary loss weight 0.4)",
                       "url": f"{_UNILM}/semantic_segmentation/configs/beit/upernet/{config}"},
        }
        inference = {"mode": "slide", "crop_size": [640, 640], "stride": [426, 426], "scales": [1.0], "flip": False,
                     "probs_before_resize": False, "resize": {"size": [2560, 640], "keep_ratio": True}}
        recs.append(ModelRecord(
            name=f"upernet_beit_{v}_ade20k", architecture="upernet", backbone=f"beit_{v}", dataset="ade20k",
            num_classes=150, arch=_arch(dim, depth, heads, outs, dpr), class_names=tuple(ade["class_names"]),
            crop_size=(640, 640), inference=inference, normalization=_IMAGENET,
            weights=tuple({"hf_hub_id": repo, "filename": f, "revision": "main", "format": "transformers"}
                          for f in _HUB_FILES),
            metrics={"mIoU": miou, "mIoU_ms": miou_ms}, source=source, recipe=recipe))
    return recs


RECORDS = _records()
for _r in RECORDS:
    register(_r)
