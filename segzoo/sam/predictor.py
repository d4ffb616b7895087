"""Promptable inference for Segment Anything networks (``segzoo.models.sam.Sam``).

The image is resized to ``img_size`` (1024) on its long side with PIL's bilinear filter, normalised
and zero-padded to the square, as Meta's ``SamPredictor`` does; prompts are in the original image's
pixels (x, y). :class:`PromptableModel` is a mixin for the model class (``set_image``/``predict``);
the functions below (:func:`embed_image`, :func:`predict_torch`) do the work and take a network, so
the automatic mask generator and code holding a bare network use them too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..inference import load_image

__all__ = ["PromptableModel", "ImageState", "embed_image", "predict_torch", "preprocess_shape", "resize_image",
           "transform_coords", "make_promptable"]


def preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """(h, w) of an h x w image resized to ``long_side`` on its longer side (Meta's rounding)."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def resize_image(image: np.ndarray, long_side: int) -> np.ndarray:
    """HxWx3 uint8 image resized to ``long_side`` on its longer side with PIL's bilinear filter."""
    from PIL import Image
    h, w = preprocess_shape(image.shape[0], image.shape[1], long_side)
    return np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def transform_coords(coords, original_size, long_side: int) -> np.ndarray:
    """(..., 2) x, y pixel coordinates in an image of ``original_size`` (h, w) -> the resized frame."""
    old_h, old_w = original_size
    new_h, new_w = preprocess_shape(old_h, old_w, long_side)
    coords = np.array(coords, dtype=float)  # a copy
    coords[..., 0] = coords[..., 0] * (new_w / old_w)
    coords[..., 1] = coords[..., 1] * (new_h / old_h)
    return coords


@dataclass
class ImageState:
    """An image's embedding and sizes: ``original_size`` (h, w) and ``input_size`` (resized, unpadded)."""

    features: torch.Tensor
    original_size: tuple
    input_size: tuple


def _as_uint8(image) -> np.ndarray:
    arr = load_image(image, "image")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return arr


@torch.no_grad()
def embed_image(model, image, image_format: str = "RGB") -> ImageState:
    """The :class:`ImageState` of ``image`` (a path, PIL image or HxWx3 uint8 array; ``image_format``
    "BGR" for OpenCV arrays) under the SAM network ``model``."""
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    arr = _as_uint8(image)
    if image_format == "BGR":
        arr = np.ascontiguousarray(arr[..., ::-1])
    resized = resize_image(arr, model.img_size)
    x = torch.as_tensor(resized, device=model.device).permute(2, 0, 1).contiguous()[None].float()
    features = model.image_encoder(model.preprocess(x))
    return ImageState(features, tuple(arr.shape[:2]), tuple(x.shape[-2:]))


@torch.no_grad()
def predict_torch(model, state: ImageState, points: torch.Tensor | None, point_labels: torch.Tensor | None,
                  boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
                  multimask_output: bool = True, return_logits: bool = False):
    """(masks (B, K, H, W) at the original size, iou_predictions (B, K), low_res_logits (B, K, 4h, 4w)) for
    batched prompts already in the resized frame: ``points`` (B, N, 2), ``point_labels`` (B, N), ``boxes``
    (B, 4), ``mask_input`` (B, 1, 4h, 4w). Masks are logits with ``return_logits``, else booleans."""
    low_res, iou = model.decode(state.features, points, point_labels, boxes, mask_input, multimask_output)
    masks = model.postprocess_masks(low_res, state.input_size, state.original_size)
    if not return_logits:
        masks = masks > model.mask_threshold
    return masks, iou, low_res


class PromptableModel:
    """``set_image`` / ``predict`` for a SAM network class (mixed in before it). ``set_image`` caches
    the image embedding; ``predict`` reuses it for any number of prompts."""

    def set_image(self, image, image_format: str = "RGB") -> None:
        """Embed ``image`` (a path, PIL image or HxWx3 uint8 array) for the following ``predict`` calls."""
        self.__dict__["_sam_image"] = embed_image(self, image, image_format)

    def reset_image(self) -> None:
        self.__dict__.pop("_sam_image", None)

    @property
    def image_embedding(self) -> torch.Tensor:
        """The (1, C, h, w) embedding of the image set last."""
        state = self.__dict__.get("_sam_image")
        if state is None:
            raise RuntimeError("set an image first: model.set_image(image) or model.predict(image, ...)")
        return state.features

    def predict(self, image=None, *, points=None, point_labels=None, boxes=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False):
        """Masks for prompts on ``image`` (embedded first; None: the image of the last ``set_image``).

        ``points``: (N, 2) x, y pixels of the image (a flat (2,) is one point; (B, N, 2) for B prompts at
        once), ``point_labels``: (N,) / (B, N), 1 foreground, 0 background (default all 1); ``boxes``: (4,)
        x0 y0 x1 y1, or (B, 4) for B prompts at once (shared points, if any, go with every box);
        ``mask_input``: (1, 256, 256) low-resolution logits of an earlier call. Returns numpy
        ``(masks, iou_scores, low_res_logits)``: masks (K, H, W) at the image's size, booleans (float
        logits with ``return_logits``), K = 3 with ``multimask_output`` else 1; iou_scores (K,);
        low_res_logits (K, 256, 256). With B prompts every output gains a leading B axis."""
        if image is not None:
            self.set_image(image)
        state = self.__dict__.get("_sam_image")
        if state is None:
            raise RuntimeError("no image: pass one, or call set_image(image) first")
        if points is None and boxes is None and mask_input is None:
            raise ValueError("give at least one prompt: points=, boxes= or mask_input=")
        dev = self.device
        batched = (boxes is not None and np.asarray(boxes).ndim == 2 and np.asarray(boxes).shape[0] > 1) or \
            (points is not None and np.asarray(points).ndim == 3)
        box_t = None
        if boxes is not None:
            box = transform_coords(np.asarray(boxes, dtype=float).reshape(-1, 2, 2), state.original_size,
                                   self.img_size).reshape(-1, 4)
            box_t = torch.as_tensor(box, dtype=torch.float, device=dev)
        pts_t = lab_t = None
        if points is not None:
            pts = np.asarray(points, dtype=float)
            pts = pts.reshape(-1, 2) if pts.ndim <= 2 else pts
            labels = np.ones(pts.shape[:-1], dtype=np.int64) if point_labels is None else np.asarray(point_labels)
            if labels.shape != pts.shape[:-1]:
                raise ValueError(f"point_labels of shape {labels.shape} for points of shape {pts.shape}")
            pts_t = torch.as_tensor(transform_coords(pts, state.original_size, self.img_size), dtype=torch.float,
                                    device=dev)
            lab_t = torch.as_tensor(labels, dtype=torch.int, device=dev)
            if pts_t.ndim == 2:
                pts_t, lab_t = pts_t[None], lab_t[None]
            if box_t is not None and pts_t.shape[0] != box_t.shape[0]:
                pts_t = pts_t.expand(box_t.shape[0], -1, -1)
                lab_t = lab_t.expand(box_t.shape[0], -1)
        mask_t = None
        if mask_input is not None:
            mask_t = torch.as_tensor(np.asarray(mask_input), dtype=torch.float, device=dev)
            mask_t = mask_t[None] if mask_t.ndim == 3 else mask_t
        masks, iou, low = predict_torch(self, state, pts_t, lab_t, box_t, mask_t, multimask_output, return_logits)
        out = (masks.cpu().numpy(), iou.float().cpu().numpy(), low.float().cpu().numpy())
        return out if batched else tuple(o[0] for o in out)

    def generate_masks(self, image, **kwargs) -> list:
        """Every mask of ``image`` (see :class:`segzoo.sam.automatic.AutomaticMaskGenerator`, whose keyword
        arguments these are)."""
        from .automatic import AutomaticMaskGenerator
        return AutomaticMaskGenerator(self, **kwargs).generate(image)


_PROMPTABLE: dict = {}


def make_promptable(model):
    """``model`` (a SAM network) with :class:`PromptableModel` mixed into its class, in place."""
    cls = type(model)
    if not issubclass(cls, PromptableModel):
        if cls not in _PROMPTABLE:
            _PROMPTABLE[cls] = type(cls.__name__, (PromptableModel, cls), {"__module__": cls.__module__})
        model.__class__ = _PROMPTABLE[cls]
    return model
