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
    rank, world = _rank_and_world()
    if world > 1:  # under torchrun: every process takes its share of the images
        paths = paths[rank::world]
        problems = problems if rank == 0 else []
    out_dir = Path(args.out)
    checkpoint = getattr(args, "checkpoint", None)
    model = create_model(args.model, pretrained=checkpoint is None, checkpoint=checkpoint,
                         device=getattr(args, "device", None))
    if getattr(model, "promptable", False):
        return _predict_promptable(model, paths, problems, out_dir, args)
    if getattr(args, "points", None) or getattr(args, "box", None) or getattr(args, "auto", False):
        raise ValueError(f"--points / --box / --auto are prompts for promptable models (sam_*); {args.model} "
                         "segments by class")
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


def _mask_overlay(rgb, masks):
    """``rgb`` with each boolean mask tinted in its own colour (largest first, so small ones stay visible)."""
    import numpy as np
    out = rgb.astype(np.float32)
    rng = np.random.RandomState(0)
    for m in masks:
        colour = rng.randint(0, 256, 3).astype(np.float32)
        out[m] = 0.45 * out[m] + 0.55 * colour
    return out.astype(np.uint8)


def _predict_promptable(model, paths, problems, out_dir, args) -> int:
    """``segzoo predict IMAGE --model sam_vit_base --points x,y[;x,y] [--labels 1,0] [--box x0,y0,x1,y1]``:
    ``<stem>_mask.png`` (the best mask; ``--all-masks``: every one), ``<stem>_mask.json`` (scores and RLE)
    and ``<stem>_overlay.png``; ``--auto``: every mask of the automatic generator in ``<stem>_masks.json``
    (uncompressed COCO RLE, largest first) and the overlay."""
    from PIL import Image

    from .errors import InvalidImageError
    from .inference import load_image
    from .sam.automatic import AutomaticMaskGenerator, rle_to_mask
    from .sam.outputs import parse_box, parse_labels, parse_points, write_auto_result, write_prompt_result
    if not args.auto and not args.points and not args.box:
        raise ValueError(f"{args.model} is promptable: give --points x,y (and --labels), --box x0,y0,x1,y1, or --auto")
    points = parse_points(args.points) if args.points else None
    labels = parse_labels(args.labels, len(points)) if points is not None else None
    box = parse_box(args.box) if args.box else None
    failed = len(problems)
    for path in paths:
        try:
            rgb = load_image(path, str(path))
        except InvalidImageError as exc:
            print(f"segzoo: skipped: {exc}", file=sys.stderr)
            failed += 1
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        if args.auto:
            anns = AutomaticMaskGenerator(model, output_mode="uncompressed_rle").generate(rgb)
            write_auto_result(anns, out_dir / f"{path.stem}_masks.json")
            masks = [rle_to_mask(a["segmentation"]).astype(bool) for a in anns]
            main = out_dir / f"{path.stem}_masks.json"
        else:
            model.set_image(rgb)
            masks, iou, _ = model.predict(points=points, point_labels=labels, boxes=box,
                                          multimask_output=box is None and points is not None and len(points) == 1)
            main = out_dir / f"{path.stem}_mask.png"
            info = write_prompt_result(masks, iou, main, all_masks=args.all_masks)
            masks = [masks[int(i)] for i in [list(iou).index(max(iou))]]
            main = f"{main} (predicted IoU {info['masks'][0]['predicted_iou']:.3f})"
        overlay_path = out_dir / f"{path.stem}_overlay.png"
        Image.fromarray(_mask_overlay(rgb, masks)).save(overlay_path)
        print(f"{path}: {len(masks)} mask(s) -> {main}, {overlay_path}")
    if failed:
        print(f"segzoo: {failed} of {len(paths) + len(problems)} inputs failed", file=sys.stderr)
        return 1
    return 0


def _rank_and_world() -> tuple[int, int]:
    import os
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _parse_sets(items) -> dict:
    """``--set key=value`` pairs as recipe overrides; values read as JSON where they parse
    (``lr=0.01``, ``crop_size=[512,512]``, ``amp=null``), as text otherwise (``amp=bf16``)."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes key=value, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _dataset(args, split: str):
    from .data import build_dataset
    if args.dataset:
        return build_dataset(args.dataset, split, root=args.data)
    return build_dataset(args.data, split)


def _train(args) -> int:
    """``segzoo train NAME --data ROOT [--set key=value ...] [--out DIR]``: fit NAME with its recipe
    on the dataset at ROOT (its layout tells which; ``--dataset`` says it), validating on its val
    split if it has one. Runs as one process or under ``torchrun --nproc-per-node N -m segzoo train``."""
    from pathlib import Path

    from . import create_model
    train = _dataset(args, "train")
    try:
        val = _dataset(args, args.val_split) if args.val_split else None
    except FileNotFoundError:
        val = None
    num_classes = getattr(train, "num_classes", None)
    model = create_model(args.model, pretrained=args.init == "pretrained", checkpoint=args.checkpoint,
                         pretrained_backbone=args.init == "imagenet", num_classes=num_classes)
    out = Path(args.out)
    try:
        recipe = model.recipe.replace(**_parse_sets(args.set))
    except TypeError as exc:  # an unknown field: one line, with the suggestion
        raise ValueError(f"--set: {exc}") from None
    result = model.fit(train, val, recipe=recipe, out=out, resume=args.resume)
    rank, _ = _rank_and_world()
    if rank == 0:
        best = result.get("best")
        print(f"trained {args.model}: {len(result['history'])} log entries, {result['skipped']} skipped steps -> "
              f"{out / 'last'}" + (f"; best mIoU {best['mIoU']:.2f} at iteration {best['iteration']}" if best else ""))
    return 0


def _eval(args) -> int:
    """``segzoo eval NAME --data ROOT [--split val]``: metrics of NAME (its weights, or
    ``--checkpoint``) with its record's test protocol; prints them as JSON (rank 0 under torchrun)."""
    from . import create_model
    data = _dataset(args, args.split)
    model = create_model(args.model, pretrained=args.checkpoint is None, checkpoint=args.checkpoint,
                         device=args.device)
    metrics = model.evaluate(data, mode=args.mode, crop_size=_cli_pair(args.crop_size),
                             stride=_cli_pair(args.stride), scales=args.scales, flip=True if args.flip else None)
    rank, _ = _rank_and_world()
    if rank == 0:
        print(json.dumps(metrics if args.per_class else {k: v for k, v in metrics.items() if not isinstance(v, dict)},
                         indent=1))
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
    pr.add_argument("--points", help="promptable models: points 'x,y;x,y' in pixels")
    pr.add_argument("--labels", help="promptable models: a label per point, 1 foreground / 0 background (default 1)")
    pr.add_argument("--box", help="promptable models: a box 'x0,y0,x1,y1'")
    pr.add_argument("--auto", action="store_true", help="promptable models: every mask (automatic generator)")
    pr.add_argument("--all-masks", action="store_true", help="promptable models: write every candidate mask")
    pr.set_defaults(func=_predict)

    cv = sub.add_parser("convert", help="convert a record's original checkpoint to segzoo's layout")
    cv.add_argument("name")
    cv.add_argument("--out", required=True, help="folder for model.safetensors + config.json + README.md")
    cv.add_argument("--checkpoint", help="convert this file instead of downloading the record's weights")
    cv.set_defaults(func=_convert)

    tr = sub.add_parser("train", help="train a model with its recipe (torchrun-ready)")
    tr.add_argument("model", help="model name or alias")
    tr.add_argument("--data", required=True, help="dataset root (standard layout, or images/ + masks/ + classes.txt)")
    tr.add_argument("--dataset",
                    help="dataset type when the layout is ambiguous (ade20k, cityscapes, voc, folder, ...)")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE", help="recipe override, e.g. iterations=600")
    tr.add_argument("--out", default="segzoo-run", help="checkpoints and history (default: segzoo-run)")
    tr.add_argument("--init", choices=["imagenet", "pretrained", "none"], default="imagenet",
                    help="start from ImageNet backbone weights (default), the record's weights, or random")
    tr.add_argument("--checkpoint", help="start from this checkpoint instead")
    tr.add_argument("--resume", help="continue the run saved in this folder")
    tr.add_argument("--val-split", default="val", help="split validated on ('' for none)")
    tr.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="evaluate a model on a dataset (mIoU, mAcc, aAcc; torchrun-ready)")
    ev.add_argument("model", help="model name or alias")
    ev.add_argument("--data", required=True, help="dataset root")
    ev.add_argument("--dataset", help="dataset type when the layout is ambiguous")
    ev.add_argument("--split", default="val")
    ev.add_argument("--checkpoint", help="local path, URL or hf-hub:org/repo instead of the record's weights")
    ev.add_argument("--mode", choices=["whole", "slide"])
    ev.add_argument("--crop-size", type=int, nargs="+", metavar="N")
    ev.add_argument("--stride", type=int, nargs="+", metavar="N")
    ev.add_argument("--scales", type=float, nargs="+")
    ev.add_argument("--flip", action="store_true")
    ev.add_argument("--device")
    ev.add_argument("--per-class", action="store_true", help="also print per-class IoU and accuracy")
    ev.set_defaults(func=_eval)
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
