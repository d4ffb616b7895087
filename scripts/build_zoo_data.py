"""Regenerate segzoo/zoo/data/*.json from the SSSegmentation zoo reference.

Usage: python scripts/build_zoo_data.py [path/to/sssegmentation_zoo.json]

Writes two data files:
  sssegmentation.json  the configs of every (segmentor, backbone) pair segzoo builds,
                       trimmed to what records, conversion and recipes need;
  datasets.json        class names and palettes of the datasets those configs use
                       (read from the installed ``ssseg`` package, a test dependency).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REF = ROOT.parent / "shared" / "reference" / "sssegmentation_zoo.json"

# (segmentor type, backbone type) pairs with a parity-tested port in segzoo.
SUPPORTED = {
    ("FCN", "ResNet"), ("PSPNet", "ResNet"), ("Deeplabv3", "ResNet"), ("Deeplabv3Plus", "ResNet"),
    ("UPerNet", "ResNet"), ("UPerNet", "SwinTransformer"), ("UPerNet", "ConvNeXt"),
    ("Segformer", "MixVisionTransformer"),
}
KEEP = ("type", "num_classes", "align_corners", "backbone", "head", "auxiliary", "inference", "losses",
        "scheduler", "norm_cfg", "act_cfg")
DATASETS = {  # segzoo dataset name -> ssseg dataset class
    "ade20k": "ADE20kDataset", "cityscapes": "CityScapesDataset", "voc": "VOCDataset",
    "pascalcontext": "PascalContextDataset", "pascalcontext59": "PascalContext59Dataset",
}


def main(ref: Path = DEFAULT_REF) -> None:
    zoo = json.loads(Path(ref).read_text())
    out = {}
    for name, entry in sorted(zoo.items()):
        cfg = entry["config"]
        if (cfg["type"], cfg["backbone"]["type"]) not in SUPPORTED:
            continue
        slim = {k: cfg[k] for k in KEEP if k in cfg}
        slim["dataset"] = {
            "type": cfg["dataset"]["type"],
            "train": cfg["dataset"]["train"]["data_pipelines"],
            "test": cfg["dataset"]["test"]["data_pipelines"],
        }
        slim["train_batch_size"] = cfg["dataloader"].get("expected_total_train_bs_for_assert")
        if "fp16_cfg" in cfg or "apexfp16" in name:
            slim["fp16"] = cfg.get("fp16_cfg", {"type": "apex"})
        out[name] = {"family": entry["family"], "checkpoint_url": entry["checkpoint_url"], "table": entry["table"],
                     "config": slim}
    data = ROOT / "segzoo" / "zoo" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "sssegmentation.json").write_text(json.dumps(out, indent=0, sort_keys=True) + "\n")

    from ssseg.modules.datasets.builder import DatasetBuilder  # test dependency
    meta = {}
    for key, clsname in DATASETS.items():
        cls = DatasetBuilder.REGISTERED_MODULES[clsname]
        meta[key] = {"num_classes": int(cls.num_classes), "class_names": list(cls.classnames),
                     "palette": [list(map(int, c)) for c in cls.palette]}
    (data / "datasets.json").write_text(json.dumps(meta, indent=0) + "\n")
    print(f"{len(out)} configs, {len(meta)} datasets")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_REF)
