"""Records for SSSegmentation's own checkpoints, generated from ``data/sssegmentation.json``.

That file holds every config of the zoo that segzoo builds; ``data/sssegmentation_skipped.json``
lists the others with the reason (both written by ``scripts/build_zoo_data.py``).

Names follow ``<segmentor>_<backbone>_<dataset>``: ``upernet_resnet50os8_ade20k`` becomes
``upernet_resnet50_os8_ade20k``. Where a transformers Hub record already owns a name
(``upernet_swin_base_ade20k``, ``segformer_mit_b0_ade20k``), the SSSegmentation record
takes the suffix ``_ssseg``.
"""
from __future__ import annotations

import os
import re

from ..registry import ModelRecord, register, resolve_name
from . import dataset_meta, load_data

_BACKBONE_NAMES = [  # (regex on the ssseg config's backbone token, segzoo backbone name)
    (r"^resnet(\d+)os(\d+)$", r"resnet\1_os\2"),
    (r"^resnest(\d+)os(\d+)$", r"resnest\1_os\2"),
    (r"^swin(tiny|small|base|large)$", r"swin_\1"),
    (r"^convnext(tiny|small|base|large|xlarge)21k$", r"convnext_\1_in22k"),
    (r"^convnext(tiny|small|base|large|xlarge)$", r"convnext_\1"),
    (r"^mitb(\d)$", r"mit_b\1"),
    (r"^vit(base|large)$", r"vit_\1"),
    (r"^beit(base|large)$", r"beit_\1"),
    (r"^maevit(base|large)$", r"mae_vit_\1"),
    (r"^(pcpvt|svt)(small|base|large)$", r"\1_\2"),
    (r"^mobilevitv2(\d+)$", r"mobilevitv2_\1"),
    (r"^mobilevit(xxs|xs|s)$", r"mobilevit_\1"),
]
_SEGMENTOR_NAMES = {"setrnaive": "setr_naive", "setrpup": "setr_pup", "setrmla": "setr_mla"}
_DATASET_NAMES = {"voc-cocosubvoc": "voc"}  # VOC classes; trained on VOC + the VOC classes of COCO


def segzoo_name(config_name: str) -> tuple[str, str, str, str]:
    """(name, segmentor, backbone, dataset) for an SSSegmentation config name."""
    parts = config_name.split("_")
    segmentor, dataset = _SEGMENTOR_NAMES.get(parts[0], parts[0]), _DATASET_NAMES.get(parts[-1], parts[-1])
    variant = []  # a head variant before the backbone: fastfcn_deeplabv3_resnet50os32_cityscapes
    if len(parts) > 3 and not _backbone_token(parts[1]) and _backbone_token(parts[2]):
        variant, parts = [parts[1]], [parts[0], *parts[2:]]
    backbone_token, extra = parts[1], parts[2:-1]  # extra: e.g. ["apexfp16"]
    backbone = _backbone_token(backbone_token) or backbone_token
    tags = ["fp16" if e == "apexfp16" else e for e in extra]
    name = "_".join([segmentor, *variant, backbone, *tags, dataset])
    return name, segmentor, backbone, dataset


def _backbone_token(token: str) -> str | None:
    """segzoo's backbone name for an SSSegmentation backbone token, None for another token."""
    for pattern, repl in _BACKBONE_NAMES:
        if re.match(pattern, token):
            return re.sub(pattern, repl, token)
    return None


def _pipeline(steps, kind):
    for step in steps:
        if step[0] == kind:
            return step[1]
    return None


def _record(config_name: str, entry: dict) -> ModelRecord:
    cfg = entry["config"]
    arch = entry["arch"]  # segzoo.convert.sssegmentation.arch_from_config(cfg), stored by the build script
    name, segmentor, backbone, dataset = segzoo_name(config_name)
    if resolve_name(name) == name:  # a Hub record (registered first, see record_modules) owns it
        name += "_ssseg"
    meta = dataset_meta(dataset)
    test, train = cfg["dataset"]["test"], cfg["dataset"]["train"]
    norm = _pipeline(test, "Normalize") or {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
    test_resize = _pipeline(test, "Resize")
    crop = _pipeline(train, "RandomCrop")
    crop_size = tuple(crop["crop_size"]) if crop else (512, 512)
    fwd, tta = cfg["inference"]["forward"], cfg["inference"]["tta"]
    inference = {
        "mode": fwd["mode"], "crop_size": fwd["cropsize"], "stride": fwd["stride"],
        "scales": list(tta["multiscale"]), "flip": bool(tta["flip"]),
        "probs_before_resize": bool(tta.get("use_probs_before_resize", False)),
        "resize": {"size": list(test_resize["output_size"]), "keep_ratio": bool(test_resize.get("keep_ratio", True))}
        if test_resize else None,
    }
    miou = entry["table"].get("mIoU", "").rstrip("%")
    metrics = {"mIoU": float(miou)} if miou else {}
    sched = cfg["scheduler"]
    recipe = {
        "optimizer": dict(sched["optimizer"]),
        "scheduler": {k: v for k, v in sched.items() if k not in ("optimizer",)},
        "batch_size": cfg.get("train_batch_size"), "crop_size": list(crop_size),
        "train_pipeline": train, "losses": cfg["losses"], "amp": "fp16" if cfg.get("fp16") else None,
        "schedule": entry["table"].get("Schedule"), "pretrain": entry["table"].get("Pretrain"),
    }
    url = entry["checkpoint_url"]
    return ModelRecord(
        name=name, architecture=arch["segmentor"], backbone=backbone, dataset=dataset, num_classes=arch["num_classes"],
        arch=arch, class_names=tuple(meta["class_names"]), crop_size=crop_size, inference=inference,
        normalization={"mean": list(norm["mean"]), "std": list(norm["std"])}, metrics=metrics,
        weights=({"url": url, "filename": os.path.basename(url), "format": "sssegmentation"},),
        source={"project": "sssegmentation", "config": config_name}, recipe=recipe,
    )


def _register_all() -> None:
    # data/sssegmentation.json holds only configs that arch_from_config translates, each with its arch;
    # the others are in data/sssegmentation_skipped.json with the reason (scripts/build_zoo_data.py
    # decides both; tests/test_zoo_data.py checks the files are what it writes)
    for config_name, entry in load_data("sssegmentation").items():
        register(_record(config_name, entry))


_register_all()
