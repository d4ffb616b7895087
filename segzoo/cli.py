"""``segzoo`` console script: list-models, info, predict, convert.

Listing and info read the records only; torch is imported by the commands that run models.
"""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _list(args) -> int:
    from .registry import explain_empty, list_models, model_info
    filters = dict(pretrained=args.pretrained, dataset=args.dataset, architecture=args.architecture,
                   backbone=args.backbone)
    names = list_models(args.pattern, **filters)
    if not names:
        print(f"segzoo: {explain_empty(args.pattern, **filters)}", file=sys.stderr)
        return 1
    if args.json:
        rows = []
        for n in names:
            info = model_info(n)
            rows.append({k: info[k] for k in ("name", "architecture", "backbone", "dataset", "num_classes", "metrics")}
                        | {"pretrained": bool(info["weights"]), "source": info["source"]})
        print(json.dumps(rows, indent=1))
    else:
        print("\n".join(names))
    return 0


def _info(args) -> int:
    from .registry import model_info
    info = model_info(args.name)
    if not args.full:
        info.pop("class_names")
        info["recipe"] = {k: v for k, v in info["recipe"].items() if k != "train_pipeline"}
    print(json.dumps(info, indent=1))
    return 0


def _predict(args) -> int:
    """``segzoo predict IMAGES_OR_FOLDERS... --model NAME --out DIR``: writes ``<stem>_labels.png``
    (uint8, or uint16 beyond 256 classes; ``--output probs``: ``<stem>_probs.npy``, CxHxW float32)
    and ``<stem>_overlay.png`` per image and prints one line each. Every readable image is
    processed; each one that fails is named on stderr and the exit status is 1 at the end. The
    output folder is created only when something is written to it."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from . import create_model
    from .errors import InvalidImageError
    from .inference import _image_files, _palette, load_image, overlay, predict

    paths, problems = _image_files(args.images)
    for msg in problems:
        print(f"segzoo: error: {msg}", file=sys.stderr)
    if not paths:
        return 1
    out_dir = Path(args.out)
    checkpoint = getattr(args, "checkpoint", None)
    model = create_model(args.model, pretrained=checkpoint is None, checkpoint=checkpoint,
                         device=getattr(args, "device", None))
    record = model.record
    num_classes = int(getattr(model, "num_classes", None) or record.num_classes)
    palette = _palette(num_classes, getattr(record, "dataset", None))
    output = getattr(args, "output", None) or "labels"
    kwargs = {"mode": args.mode, "scales": args.scales, "flip": True if args.flip else None, "output": output,
              "crop_size": _cli_pair(getattr(args, "crop_size", None)), "stride": _cli_pair(getattr(args, "stride", None))}
    if getattr(args, "batch_size", None):
        kwargs["batch_size"] = args.batch_size
    used: set[str] = set()
    failed = len(problems)
    for path in paths:
        try:
            rgb = load_image(path, str(path))
            result = predict(model, rgb, **kwargs)
        except InvalidImageError as exc:
            print(f"segzoo: skipped: {exc}", file=sys.stderr)
            failed += 1
            continue
        labels = result if output == "labels" else result.argmax(axis=0)
        stem, k = path.stem, 1
        while stem in used:
            stem, k = f"{path.stem}_{k}", k + 1
        used.add(stem)
        out_dir.mkdir(parents=True, exist_ok=True)
        overlay_path = out_dir / f"{stem}_overlay.png"
        if output == "labels":
            main_path = out_dir / f"{stem}_labels.png"
            Image.fromarray(labels.astype(np.uint8 if num_classes <= 256 else np.uint16)).save(main_path)
        else:
            main_path = out_dir / f"{stem}_probs.npy"
            np.save(main_path, result)
        Image.fromarray(overlay(rgb, labels, palette)).save(overlay_path)
        present = np.unique(labels)
        print(f"{path}: {labels.shape[1]}x{labels.shape[0]}, {len(present)} classes -> {main_path}, {overlay_path}")
    if failed:
        print(f"segzoo: {failed} of {len(paths) + len(problems)} inputs failed", file=sys.stderr)
        return 1
    return 0


def _cli_pair(values):
    """``--crop-size 512`` or ``--crop-size 512 1024`` -> 512 or (512, 1024); None stays None."""
    if not values:
        return None
    if len(values) > 2:
        raise ValueError(f"expected one or two sizes (H [W]), got {len(values)}")
    return values[0] if len(values) == 1 else tuple(values)


def _convert(args) -> int:
    """``segzoo convert NAME --out DIR [--checkpoint FILE]``: the record's original checkpoint
    (downloaded, or FILE) in save_pretrained's layout, ready for ``push_to_hub``."""
    from ._factory import build_and_load
    from .hub import save_pretrained
    from .hub.files import _sha256_file
    from .registry import get_record

    record = get_record(args.name)
    model, info = build_and_load(record.arch, checkpoint=args.checkpoint or None, record=record)
    model.record = record
    out = save_pretrained(model, args.out, provenance={"source": info["checkpoint"], "format": info["format"],
                                                       "weights": [dict(w) for w in record.weights]})
    print(f"{record.name}: {info['format']} weights from {info['checkpoint']}")
    print(f"wrote {out}: model.safetensors (sha256 {_sha256_file(out / 'model.safetensors')}), config.json, README.md")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__
    p = argparse.ArgumentParser(prog="segzoo", description="Semantic-segmentation model hub.")
    p.add_argument("--version", action="version", version=f"segzoo {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list-models", help="list model names")
    ls.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'upernet_*' (any case)")
    ls.add_argument("--dataset")
    ls.add_argument("--architecture")
    ls.add_argument("--backbone")
    ls.add_argument("--pretrained", action="store_true", help="only names with weights")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)

    inf = sub.add_parser("info", help="print a model record as JSON")
    inf.add_argument("name", help="model name or alias (e.g. its Hub repo id)")
    inf.add_argument("--full", action="store_true", help="include class names and the training pipeline")
    inf.set_defaults(func=_info)

    pr = sub.add_parser("predict", help="segment images; writes label PNGs and colour overlays")
    pr.add_argument("images", nargs="+", help="image files and/or folders of images")
    pr.add_argument("--model", required=True, help="model name or alias (e.g. its Hub repo id)")
    pr.add_argument("--checkpoint", help="local path, URL or hf-hub:org/repo instead of the record's weights")
    pr.add_argument("--mode", choices=["whole", "slide"])
    pr.add_argument("--crop-size", type=int, nargs="+", metavar="N", help="slide window: H [W]")
    pr.add_argument("--stride", type=int, nargs="+", metavar="N", help="slide stride: H [W]")
    pr.add_argument("--output", choices=["labels", "probs"], default="labels",
                    help="labels: <stem>_labels.png; probs: <stem>_probs.npy (CxHxW float32)")
    pr.add_argument("--flip", action="store_true")
    pr.add_argument("--scales", type=float, nargs="+")
    pr.add_argument("--batch-size", type=int, default=None)
    pr.add_argument("--device")
    pr.add_argument("--out", required=True, help="output folder (created when the first result is written)")
    pr.set_defaults(func=_predict)

    cv = sub.add_parser("convert", help="convert a record's original checkpoint to segzoo's layout")
    cv.add_argument("name")
    cv.add_argument("--out", required=True, help="folder for model.safetensors + config.json + README.md")
    cv.add_argument("--checkpoint", help="convert this file instead of downloading the record's weights")
    cv.set_defaults(func=_convert)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .registry import UnknownModelError
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `segzoo list-models | head`: the reader left, nothing to report
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UnknownModelError as exc:
        print(f"segzoo: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"segzoo: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
