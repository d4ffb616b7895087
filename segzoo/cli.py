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
    from .inference import predict_command
    return predict_command(args)


def _convert(args) -> int:
    from .hub import convert_command
    return convert_command(args)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
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
