"""What ``segzoo predict IMAGE --model sam_* (--points / --box / --auto)`` needs beyond the model: the
prompt arguments' parsing and the files it writes (mask PNGs, JSON with scores and COCO RLEs)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["parse_points", "parse_labels", "parse_box", "write_prompt_result", "write_auto_result"]


def _numbers(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise ValueError(f"{what}: expected comma-separated numbers, got {text!r}") from None


def parse_points(text: str) -> np.ndarray:
    """``"x,y"`` or ``"x,y;x,y;..."`` -> (N, 2) float array of pixel coordinates."""
    pts = [_numbers(p, "--points") for p in text.split(";") if p.strip()]
    if not pts or any(len(p) != 2 for p in pts):
        raise ValueError(f"--points: expected x,y[;x,y...], got {text!r}")
    return np.array(pts, dtype=float)


def parse_labels(text: str | None, n: int) -> np.ndarray:
    """``"1,0,..."`` (1 foreground, 0 background) -> (n,) ints; None -> all foreground."""
    if text is None:
        return np.ones(n, dtype=np.int64)
    labels = [int(v) for v in _numbers(text, "--labels")]
    if len(labels) != n or any(v not in (0, 1) for v in labels):
        raise ValueError(f"--labels: expected {n} values of 0 or 1, got {text!r}")
    return np.array(labels, dtype=np.int64)


def parse_box(text: str) -> np.ndarray:
    """``"x0,y0,x1,y1"`` -> (4,) float array."""
    box = _numbers(text, "--box")
    if len(box) != 4:
        raise ValueError(f"--box: expected x0,y0,x1,y1, got {text!r}")
    return np.array(box, dtype=float)


def _save_png(mask: np.ndarray, path: Path) -> None:
    from PIL import Image
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def write_prompt_result(masks: np.ndarray, iou: np.ndarray, out, *, all_masks: bool = False) -> dict:
    """Write the best mask (highest predicted IoU; every mask with ``all_masks``) of a ``predict`` call
    as PNG (``out`` is the PNG path; others get ``_1``, ``_2`` ... suffixes) and ``<out>.json`` with the
    scores and uncompressed COCO RLEs. Returns the JSON's content."""
    import torch
    from .automatic import mask_to_rle
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    masks = np.asarray(masks).astype(bool)
    order = list(np.argsort(-np.asarray(iou)))
    keep = order if all_masks else order[:1]
    files = []
    for rank, i in enumerate(keep):
        path = out if rank == 0 else out.with_name(f"{out.stem}_{rank}{out.suffix}")
        _save_png(masks[i], path)
        files.append(str(path))
    rles = mask_to_rle(torch.as_tensor(masks[keep]))
    info = {"masks": [{"file": f, "predicted_iou": float(iou[i]), "area": int(masks[i].sum()), "segmentation": r}
                      for f, i, r in zip(files, keep, rles)]}
    out.with_suffix(".json").write_text(json.dumps(info))
    return info


def write_auto_result(anns: list, out) -> None:
    """Write an automatic generator's masks (``output_mode`` "uncompressed_rle" or "coco_rle") as JSON."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([dict(a) for a in anns]))
