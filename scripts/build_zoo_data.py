"""Regenerate segzoo/zoo/data/*.json from the SSSegmentation zoo reference.

Usage:
  python scripts/build_zoo_data.py [REFERENCE] [--out DIR]   write the data files (default: segzoo/zoo/data)
  python scripts/build_zoo_data.py [REFERENCE] --check       regenerate into a temporary folder and exit 1,
                                                              naming each file, where the committed one differs

REFERENCE defaults to ../shared/reference/sssegmentation_zoo.json beside the repository.

Every config of the reference goes to exactly one of two files. segzoo's own translator
(``segzoo.convert.sssegmentation.arch_from_config``) decides which: a config it translates is
one segzoo builds exactly, anything else raises ``UnsupportedConfig`` with the reason.

  sssegmentation.json          the configs segzoo builds (each becomes a record), trimmed to what
                               records, conversion and recipes need, with the ``arch`` the
                               translator made of each (so listing models never runs it);
  sssegmentation_skipped.json  the configs it does not build, each with the translator's reason;
  datasets.json                class names and palettes of the datasets the built configs and the
                               Hub records (transformers_hub.json) use, read from the installed
                               ``ssseg`` package (a test dependency).

Each file holds one record per line, compact: ``"name": {...keys sorted...}`` in
sssegmentation.json and datasets.json (names sorted), ``{"config", "segmentor", "backbone",
"reason"}`` in sssegmentation_skipped.json (configs sorted), so a diff shows which record changed.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REF = ROOT.parent / "shared" / "reference" / "sssegmentation_zoo.json"
DEFAULT_OUT = ROOT / "segzoo" / "zoo" / "data"
if str(ROOT) not in sys.path:  # the translator is segzoo's own, from this checkout
    sys.path.insert(0, str(ROOT))

KEEP = ("type", "segmentor", "num_classes", "align_corners", "backbone", "head", "auxiliary", "inference", "losses",
        "scheduler", "norm_cfg", "act_cfg")
FILES = ("sssegmentation.json", "sssegmentation_skipped.json", "datasets.json")


# ---- layout: one record per line -----------------------------------------------------------------
def _compact(obj, sort_keys: bool = True) -> str:
    return json.dumps(obj, sort_keys=sort_keys, separators=(",", ":"))


def dumps_mapping(records: dict) -> str:
    """``{"name": {...}, ...}`` with one ``"name": {...}`` per line, names and keys sorted."""
    lines = [f"{json.dumps(name)}: {_compact(records[name])}" for name in sorted(records)]
    return "{\n" + ",\n".join(lines) + ("\n" if lines else "") + "}\n"


def dumps_list(rows: list) -> str:
    """``[{...}, ...]`` with one object per line, rows and their keys in the order given."""
    lines = [_compact(row, sort_keys=False) for row in rows]
    return "[\n" + ",\n".join(lines) + ("\n" if lines else "") + "]\n"


# ---- the data --------------------------------------------------------------------------------------
def _model_cfg(cfg: dict) -> dict:
    return {k: cfg[k] for k in KEEP if k in cfg}


def _pipelines(dataset: dict, split: str) -> list:
    """A config's ``split`` pipeline; a MultipleDataset's members share theirs (its first member's)."""
    if "data_pipelines" in dataset[split]:
        return dataset[split]["data_pipelines"]
    members = [v for v in dataset[split].values() if isinstance(v, dict) and split in v]
    return members[0][split]["data_pipelines"]


def _slim(name: str, entry: dict) -> dict:
    cfg = entry["config"]
    slim = _model_cfg(cfg)
    slim["dataset"] = {
        "type": cfg["dataset"]["type"],
        "train": _pipelines(cfg["dataset"], "train"),
        "test": _pipelines(cfg["dataset"], "test"),
    }
    slim["train_batch_size"] = cfg["dataloader"].get("expected_total_train_bs_for_assert")
    if "fp16_cfg" in cfg or "apexfp16" in name:
        slim["fp16"] = cfg.get("fp16_cfg", {"type": "apex"})
    return {"family": entry["family"], "checkpoint_url": entry["checkpoint_url"], "table": entry["table"],
            "config": slim}


def split_zoo(zoo: dict) -> tuple[dict, list]:
    """(configs segzoo builds, keyed by config name; the others as rows with the reason)."""
    from segzoo.convert.sssegmentation import UnsupportedConfig, arch_from_config
    built, skipped = {}, []
    for name in sorted(zoo):
        cfg = _model_cfg(zoo[name]["config"])
        try:
            arch = arch_from_config(cfg)
        except UnsupportedConfig as exc:
            reason = str(exc).strip() or type(exc).__name__
            skipped.append({"config": name, "segmentor": cfg["type"], "backbone": cfg["backbone"]["type"],
                            "reason": reason})
            continue
        except Exception as exc:  # a translator bug, not a verdict: say which config
            raise RuntimeError(f"{name}: arch_from_config failed with {type(exc).__name__}: {exc}") from exc
        built[name] = {**_slim(name, zoo[name]), "arch": arch}
    return built, skipped


def dataset_meta(zoo: dict, built: dict, also=()) -> dict:
    """{dataset name: {num_classes, class_names, palette}} for the datasets the built configs use and
    the names in ``also`` (the Hub records' datasets).

    A dataset's name is the one ``segzoo.zoo.sssegmentation.segzoo_name`` gives a config,
    its class the config's ``dataset.type`` in ssseg's registry.
    """
    from segzoo.zoo.sssegmentation import segzoo_name
    classes: dict[str, str] = {}
    for name, entry in zoo.items():
        key, clsname = segzoo_name(name)[3], entry["config"]["dataset"]["type"]
        if clsname == "MultipleDataset":  # VOC + COCO's VOC classes: the classes of the name's dataset
            continue
        if classes.setdefault(key, clsname) != clsname:
            raise RuntimeError(f"dataset {key!r} is {classes[key]} in one config and {clsname} in {name}")
    wanted = {segzoo_name(name)[3] for name in built} | set(also)
    unknown = sorted(wanted - set(classes))
    if unknown:
        raise RuntimeError(f"no config of the reference uses dataset {', '.join(unknown)}")
    if not wanted:
        return {}
    from ssseg.modules.datasets.builder import DatasetBuilder  # test dependency
    meta = {}
    for key in sorted(wanted):
        cls = DatasetBuilder.REGISTERED_MODULES[classes[key]]
        meta[key] = {"num_classes": int(cls.num_classes), "class_names": list(cls.classnames),
                     "palette": [list(map(int, c)) for c in cls.palette]}
    return meta


def hub_datasets(data: Path = DEFAULT_OUT) -> set:
    """Datasets of the transformers Hub records (``transformers_hub.json``, written by hand: its
    names end with the dataset, as every record name does)."""
    path = Path(data) / "transformers_hub.json"
    return {name.split("_")[-1] for name in json.loads(path.read_text())} if path.is_file() else set()


def render(ref: Path = DEFAULT_REF) -> dict[str, str]:
    """{file name: text} of every data file, from the reference at ``ref``."""
    zoo = json.loads(Path(ref).read_text())
    built, skipped = split_zoo(zoo)
    return {
        "sssegmentation.json": dumps_mapping(built),
        "sssegmentation_skipped.json": dumps_list(skipped),
        "datasets.json": dumps_mapping(dataset_meta(zoo, built, also=hub_datasets(DEFAULT_OUT))),
    }


def build(ref: Path = DEFAULT_REF, out: Path = DEFAULT_OUT) -> dict[str, str]:
    """Write the data files into ``out``; returns what was written."""
    texts = render(ref)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for fname, text in texts.items():
        (out / fname).write_bytes(text.encode())
    return texts


def differing(ref: Path = DEFAULT_REF, data: Path = DEFAULT_OUT) -> list[str]:
    """Names of the data files in ``data`` that are missing or differ from a fresh regeneration
    (done in a temporary folder, so ``data`` is never written)."""
    with tempfile.TemporaryDirectory(prefix="segzoo-zoo-data-") as tmp:
        build(ref, Path(tmp))
        return [f for f in FILES if not (Path(data) / f).is_file()
                or (Path(data) / f).read_bytes() != (Path(tmp) / f).read_bytes()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", nargs="?", type=Path, default=DEFAULT_REF,
                        help="the SSSegmentation zoo reference (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder of the data files: written, or with --check compared (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a regenerated file differs from the one in --out")
    args = parser.parse_args(argv)
    if args.check:
        bad = differing(args.reference, args.out)
        if bad:
            print(f"out of date in {args.out}: {', '.join(bad)}; regenerate with "
                  f"python scripts/build_zoo_data.py {args.reference}", file=sys.stderr)
            return 1
        print(f"{', '.join(FILES)} in {args.out} are up to date")
        return 0
    texts = build(args.reference, args.out)
    n_built = len(json.loads(texts["sssegmentation.json"]))
    n_skipped = len(json.loads(texts["sssegmentation_skipped.json"]))
    n_datasets = len(json.loads(texts["datasets.json"]))
    print(f"{n_built} configs built, {n_skipped} skipped with their reason, {n_datasets} datasets -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
