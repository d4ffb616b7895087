"""Automatic mask generation with a SAM network: a grid of single-point prompts over the image (and,
optionally, over overlapping crops of it), filtered by predicted IoU and stability score, deduplicated
by box NMS (``torchvision.ops.batched_nms``), returned largest first.

The procedure and its defaults are Meta's ``SamAutomaticMaskGenerator`` (the defaults were chosen for
ViT-H). Masks come as boolean arrays, as uncompressed COCO RLE (``{"size": [h, w], "counts": [...]}``,
column-major runs starting with zeros) or as compressed COCO RLE strings, without pycocotools.
"""
from __future__ import annotations

import math
from itertools import product
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms

from .predictor import embed_image, transform_coords

__all__ = ["AutomaticMaskGenerator", "point_grid", "crop_boxes", "mask_to_rle", "rle_to_mask", "rle_area",
           "rle_to_coco_string", "stability_score", "masks_to_boxes"]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


# ---- geometry, scores and encodings ---------------------------------------------------------------
def point_grid(n_per_side: int) -> np.ndarray:
    """(n², 2) x, y points evenly spaced in [0, 1]², half a step from the borders, row by row."""
    step = 1 / (2 * n_per_side)
    side = np.linspace(step, 1 - step, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def crop_boxes(im_size, n_layers: int, overlap_ratio: float) -> tuple[list, list]:
    """(boxes x0 y0 x1 y1, their layer) of the whole image and, in layer i >= 1, (2^i)² overlapping crops."""
    im_h, im_w = im_size
    short = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    for i in range(n_layers):
        n = 2 ** (i + 1)
        overlap = int(overlap_ratio * short * (2 / n))
        cw = int(math.ceil((overlap * (n - 1) + im_w) / n))
        ch = int(math.ceil((overlap * (n - 1) + im_h) / n))
        x0s = [int((cw - overlap) * j) for j in range(n)]
        y0s = [int((ch - overlap) * j) for j in range(n)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + cw, im_w), min(y0 + ch, im_h)])
            layers.append(i + 1)
    return boxes, layers


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks binarised at ``threshold + offset`` and ``threshold - offset`` (per mask)."""
    inter = (logits > threshold + offset).flatten(1).sum(-1, dtype=torch.int32)
    union = (logits > threshold - offset).flatten(1).sum(-1, dtype=torch.int32)
    return inter / union


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, 4) x0 y0 x1 y1 (inclusive) of (N, H, W) boolean masks; zeros for an empty mask."""
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, device=masks.device, dtype=torch.long)
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)
    h, w = masks.shape[-2:]
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    bottom = torch.where(rows, ar_h, -1).amax(-1)
    top = torch.where(rows, ar_h, h).amin(-1)
    right = torch.where(cols, ar_w, -1).amax(-1)
    left = torch.where(cols, ar_w, w).amin(-1)
    out = torch.stack([left, top, right, bottom], dim=-1)
    empty = ~rows.any(-1)
    return torch.where(empty[..., None], torch.zeros_like(out), out)


def mask_to_rle(masks: torch.Tensor) -> list[dict]:
    """Uncompressed COCO RLEs of (N, H, W) boolean masks."""
    n, h, w = masks.shape
    if n == 0:
        return []
    flat = masks.permute(0, 2, 1).flatten(1)
    change = (flat[:, 1:] != flat[:, :-1]).nonzero().cpu().numpy()  # (row, col) pairs, row-major order
    rows, pos = change[:, 0], change[:, 1] + 1  # where a new run starts
    per_row = np.bincount(rows, minlength=n)
    ends = np.cumsum(per_row)
    starts = ends - per_row
    prev = np.zeros_like(pos)
    prev[1:] = pos[:-1]
    prev[starts[per_row > 0]] = 0  # a row's first run starts at 0
    runs = (pos - prev).tolist()
    last = np.full(n, h * w, dtype=np.int64)
    last[per_row > 0] = h * w - pos[ends[per_row > 0] - 1]
    last = last.tolist()
    first = flat[:, 0].cpu().tolist()
    return [{"size": [h, w], "counts": ([0] if first[i] else []) + runs[starts[i]:ends[i]] + [last[i]]}
            for i in range(n)]


def rle_to_mask(rle: dict) -> np.ndarray:
    """The HxW boolean mask of an uncompressed COCO RLE."""
    h, w = rle["size"]
    values = np.zeros(len(rle["counts"]), dtype=bool)
    values[1::2] = True
    return np.repeat(values, rle["counts"]).reshape(w, h).transpose()


def rle_area(rle: dict) -> int:
    return int(sum(rle["counts"][1::2]))


def rle_to_coco_string(rle: dict) -> dict:
    """Compressed COCO RLE (``counts`` as pycocotools' string) of an uncompressed one."""
    counts, chars = rle["counts"], []
    for i, x in enumerate(counts):
        x = int(x) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return {"size": list(rle["size"]), "counts": "".join(chars)}


def _xywh(box) -> list:
    b = [float(v) for v in box] if not isinstance(box, list) else list(box)
    return [b[0], b[1], b[2] - b[0], b[3] - b[1]]


def _remove_small_regions(mask: np.ndarray, area: float, holes: bool) -> tuple[np.ndarray, bool]:
    """``mask`` without its 8-connected holes (or islands) smaller than ``area``; whether it changed."""
    from scipy import ndimage
    work = np.logical_xor(holes, mask)
    labels, n = ndimage.label(work, structure=np.ones((3, 3), dtype=int))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < area]
    if not small:
        return mask, False
    fill = [0] + small
    if not holes:
        fill = [i for i in range(n + 1) if i not in fill] or [int(np.argmax(sizes)) + 1]
    return np.isin(labels, fill), True


# ---- the generator --------------------------------------------------------------------------------
def _cat(parts: list[dict]) -> dict:
    out: dict = {}
    for part in parts:
        for k, v in part.items():
            out[k] = v if k not in out else (out[k] + v if isinstance(v, list) else torch.cat([out[k], v]))
    return out


def _take(data: dict, keep: torch.Tensor) -> dict:
    if keep.dtype == torch.bool:
        keep = keep.nonzero().flatten()
    idx = keep.cpu().tolist()
    return {k: ([v[i] for i in idx] if isinstance(v, list) else v[keep.to(v.device)]) for k, v in data.items()}


class AutomaticMaskGenerator:
    """Masks of everything in an image (see the module docstring). Arguments as Meta's
    ``SamAutomaticMaskGenerator``: ``points_per_side`` (or explicit ``point_grids``, one per crop layer,
    in [0, 1]²), ``points_per_batch``, ``pred_iou_thresh``, ``stability_score_thresh`` /
    ``stability_score_offset``, ``box_nms_thresh``, ``crop_n_layers`` / ``crop_nms_thresh`` /
    ``crop_overlap_ratio`` / ``crop_n_points_downscale_factor``, ``min_mask_region_area`` (holes and
    islands smaller than it removed; needs scipy), ``output_mode`` (binary_mask, uncompressed_rle,
    coco_rle)."""

    def __init__(self, model, points_per_side: int | None = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7, crop_n_layers: int = 0,
                 crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1, point_grids=None, min_mask_region_area: int = 0,
                 output_mode: str = "binary_mask"):
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"unknown output_mode {output_mode!r}; known: {', '.join(OUTPUT_MODES)}")
        if points_per_side is not None:
            self.point_grids = [point_grid(int(points_per_side / crop_n_points_downscale_factor ** i))
                                for i in range(crop_n_layers + 1)]
        else:
            self.point_grids = [np.asarray(g, dtype=float) for g in point_grids]
        self.model = model
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode

    @torch.inference_mode()
    def generate(self, image) -> list[dict[str, Any]]:
        """One dict per mask, largest area first: ``segmentation`` (per ``output_mode``), ``area``,
        ``bbox`` (x, y, w, h), ``predicted_iou``, ``point_coords`` ([[x, y]]), ``stability_score``,
        ``crop_box`` (x, y, w, h). ``image``: a path, PIL image or HxWx3 uint8 RGB array."""
        from .predictor import _as_uint8
        image = _as_uint8(image)
        data = self._generate(image)
        if self.min_mask_region_area > 0:
            data = self._postprocess_small_regions(data, self.min_mask_region_area,
                                                   max(self.box_nms_thresh, self.crop_nms_thresh))
        anns = []
        for i, rle in enumerate(data.get("rles", [])):
            if self.output_mode == "binary_mask":
                seg = rle_to_mask(rle)
            elif self.output_mode == "coco_rle":
                seg = rle_to_coco_string(rle)
            else:
                seg = rle
            anns.append({"segmentation": seg, "area": rle_area(rle), "bbox": _xywh(data["boxes"][i].tolist()),
                         "predicted_iou": float(data["iou_preds"][i]), "point_coords": [data["points"][i].tolist()],
                         "stability_score": float(data["stability_score"][i]),
                         "crop_box": _xywh(data["crop_boxes"][i].tolist())})
        anns.sort(key=lambda a: -a["area"])
        return anns

    def _generate(self, image: np.ndarray) -> dict:
        size = image.shape[:2]
        boxes, layers = crop_boxes(size, self.crop_n_layers, self.crop_overlap_ratio)
        data = _cat([self._process_crop(image, box, layer, size) for box, layer in zip(boxes, layers)])
        if len(boxes) > 1 and data.get("rles"):
            cb = data["crop_boxes"].float()
            scores = 1 / ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1]))
            keep = batched_nms(data["boxes"].float(), scores.to(data["boxes"].device),
                               torch.zeros(len(data["boxes"])), iou_threshold=self.crop_nms_thresh)
            data = _take(data, keep)
        return {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in data.items()}

    def _process_crop(self, image: np.ndarray, crop_box: list, layer: int, orig_size) -> dict:
        x0, y0, x1, y1 = crop_box
        crop = np.ascontiguousarray(image[y0:y1, x0:x1, :])
        crop_size = crop.shape[:2]
        state = embed_image(self.model, crop)
        points = self.point_grids[layer] * np.array(crop_size)[None, ::-1]
        parts = [self._process_batch(state, points[i:i + self.points_per_batch], crop_size, crop_box, orig_size)
                 for i in range(0, len(points), self.points_per_batch)]
        data = _cat(parts)
        if not data.get("rles"):
            return {}
        keep = batched_nms(data["boxes"].float(), data["iou_preds"], torch.zeros(len(data["boxes"])),
                           iou_threshold=self.box_nms_thresh)
        data = _take(data, keep)
        offset = torch.tensor([[x0, y0, x0, y0]], device=data["boxes"].device)
        data["boxes"] = data["boxes"] + offset
        data["points"] = data["points"] + torch.tensor([[x0, y0]], device=data["points"].device)
        data["crop_boxes"] = torch.tensor([crop_box] * len(data["rles"]))
        return data

    #: low-resolution masks upsampled to the image at once (bounds the full-size float logits in memory)
    upsample_chunk: int = 16

    def _process_batch(self, state, points: np.ndarray, crop_size, crop_box: list, orig_size) -> dict:
        """The masks of a batch of point prompts, through the predicted-IoU and stability filters, as
        boxes and RLEs. The predicted-IoU filter runs before the masks are upsampled (it reads the IoU
        scores only), and the masks are upsampled, scored and binarised a chunk at a time: the same
        masks and scores as filtering the full-size logits of the whole batch."""
        orig_h, orig_w = orig_size
        model = self.model
        pts = torch.as_tensor(transform_coords(points, crop_size, model.img_size), device=model.device)
        labels = torch.ones(pts.shape[0], dtype=torch.int, device=pts.device)
        low_res, iou = model.decode(state.features, pts[:, None, :], labels[:, None], None, None, True)
        k = low_res.shape[1]
        low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1)
        pts_rep = torch.as_tensor(points.repeat(k, axis=0))
        if self.pred_iou_thresh > 0.0:
            keep = iou > self.pred_iou_thresh
            low_res, iou, pts_rep = low_res[keep], iou[keep], pts_rep[keep.cpu()]
        stabs, masks, keeps = [], [], []
        for i in range(0, len(low_res), self.upsample_chunk):
            logits = model.postprocess_masks(low_res[i:i + self.upsample_chunk, None], state.input_size,
                                             state.original_size)[:, 0]
            stab = stability_score(logits, model.mask_threshold, self.stability_score_offset)
            if self.stability_score_thresh > 0.0:
                keep = stab >= self.stability_score_thresh
                logits, stab = logits[keep], stab[keep]
                keeps.append(keep)
            stabs.append(stab)
            masks.append(logits > model.mask_threshold)
            del logits
        h, w = state.original_size
        stab = torch.cat(stabs) if stabs else iou.new_zeros(0)
        masks = torch.cat(masks) if masks else torch.zeros(0, h, w, dtype=torch.bool, device=iou.device)
        if keeps:
            keep = torch.cat(keeps)
            iou, pts_rep = iou[keep], pts_rep[keep.cpu()]
        boxes = masks_to_boxes(masks)
        keep = ~self._near_crop_edge(boxes, crop_box, [0, 0, orig_w, orig_h])
        if not bool(keep.all()):
            masks, iou, pts_rep, stab, boxes = masks[keep], iou[keep], pts_rep[keep.cpu()], stab[keep], boxes[keep]
        x0, y0, x1, y1 = crop_box
        if (x0, y0, x1, y1) != (0, 0, orig_w, orig_h):
            masks = torch.nn.functional.pad(masks, (x0, orig_w - x1, y0, orig_h - y1), value=False)
        return {"iou_preds": iou, "points": pts_rep, "stability_score": stab, "boxes": boxes,
                "rles": mask_to_rle(masks)}

    @staticmethod
    def _near_crop_edge(boxes: torch.Tensor, crop_box: list, orig_box: list, atol: float = 20.0) -> torch.Tensor:
        """Boxes touching an edge of the crop that is not an edge of the image."""
        crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
        orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
        b = (boxes + torch.tensor([crop_box[0], crop_box[1]] * 2, device=boxes.device)).float()
        near_crop = torch.isclose(b, crop[None, :], atol=atol, rtol=0)
        near_image = torch.isclose(b, orig[None, :], atol=atol, rtol=0)
        return torch.any(near_crop & ~near_image, dim=1)

    @staticmethod
    def _postprocess_small_regions(data: dict, min_area: int, nms_thresh: float) -> dict:
        if not data.get("rles"):
            return data
        masks, scores = [], []
        for rle in data["rles"]:
            mask = rle_to_mask(rle)
            mask, changed_holes = _remove_small_regions(mask, min_area, holes=True)
            mask, changed_islands = _remove_small_regions(mask, min_area, holes=False)
            masks.append(torch.as_tensor(mask)[None])
            scores.append(float(not (changed_holes or changed_islands)))
        masks = torch.cat(masks)
        boxes = masks_to_boxes(masks)
        keep = batched_nms(boxes.float(), torch.as_tensor(scores), torch.zeros(len(boxes)), iou_threshold=nms_thresh)
        data = dict(data, rles=list(data["rles"]), boxes=data["boxes"].clone())
        for i in keep.tolist():
            if scores[i] == 0.0:
                data["rles"][i] = mask_to_rle(masks[i][None])[0]
                data["boxes"][i] = boxes[i]
        return _take(data, keep)
