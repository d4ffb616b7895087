"""Training and test transforms of segmentation samples, built from SSSegmentation-style recipes.

A sample is a dict with ``image`` (a ``uint8`` ``3xHxW`` tensor until :class:`Normalize` or
:class:`ToTensor` makes it ``float32``), ``mask`` (an ``int64`` ``HxW`` tensor, ``255`` = ignore)
and anything else the dataset adds (``id``); :class:`EdgeExtractor` adds ``edge``. Numpy ``HxWx3``
images and ``HxW`` masks are converted on entry (:func:`to_sample`).

Every transform is ``transform(sample, generator=None) -> sample``; the random ones draw all
their randomness from the ``torch.Generator`` passed in, so a run is reproducible and resumable.

Behaviour follows SSSegmentation 1.7.0's ``ssseg/modules/datasets/pipelines/transforms.py``:

- Resize: the same output size (random scale, ``keep_ratio`` rounding, ``min_size``), bilinear
  images reproduce OpenCV's fixed-point ``INTER_LINEAR`` (bit-exact on uint8 images), nearest masks
  reproduce ``INTER_NEAREST``'s source indices exactly.
- Normalize: the reference works on OpenCV's BGR images and ``to_rgb=True`` turns them to RGB; our
  images are RGB already, so ``to_rgb=True`` leaves the channel order and ``to_rgb=False`` turns the
  image to BGR (the order the reference would normalize in). The arithmetic is OpenCV's (bit-exact).
- PhotoMetricDistortion: the same draws and the same 8-bit HSV arithmetic as OpenCV. The reference
  converts its BGR image with ``COLOR_RGB2HSV`` (so its hue shift of ``d`` turns true hues by about
  ``-d``); ours runs the same conversion on the image in BGR order and so gives the same pixels.
- The ignore label is segzoo's ``255`` (the reference uses ``-100``): ``ignore_index`` and the mask
  fill values default to 255, and a recipe's ``-100`` is read as 255.
- Padding pads (or, for a larger input, crops, as the reference's tensor path does) around the
  centre; ``data_type`` is accepted and ignored (both reference paths pad the same way).
- RandomRotation samples the same angles and uses OpenCV's rotation matrix, but interpolates with
  ``grid_sample`` (bicubic image by default, nearest mask), not OpenCV's ``warpAffine``: pixel values
  differ, and pixels whose interpolation window leaves the image take the fill value.
- The reference's ``img2aug_pos_mapper`` options are accepted and ignored (segzoo does not track it).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["TRANSFORMS", "register_transform", "build_pipeline", "Compose", "to_sample", "IGNORE_INDEX",
           "resize_image", "resize_mask", "rgb_to_hsv_cv2", "hsv_to_rgb_cv2",
           "Resize", "ResizeShortestEdge", "RandomChoiceResize", "RandomCrop", "RandomFlip", "PhotoMetricDistortion",
           "RandomRotation", "EdgeExtractor", "Normalize", "ToTensor", "Padding"]

IGNORE_INDEX = 255
TRANSFORMS: dict[str, type] = {}
_REF_IGNORE = -100  # the reference's ignore label, read as IGNORE_INDEX in recipes


def register_transform(name: str) -> Callable[[type], type]:
    """Class decorator: make a transform buildable by ``name`` in recipe lists."""
    def deco(cls: type) -> type:
        if name in TRANSFORMS:
            raise ValueError(f"transform {name!r} is registered twice")
        TRANSFORMS[name] = cls
        return cls
    return deco


# ---------------------------------------------------------------------------------------------
# samples
# ---------------------------------------------------------------------------------------------
def to_sample(sample: Mapping[str, Any]) -> dict:
    """A copy of ``sample`` with a ``3xHxW`` image tensor and an ``int64`` ``HxW`` mask tensor."""
    out = dict(sample)
    image = out["image"]
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be HxWx3, got shape {image.shape}")
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    elif isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image tensor must be 3xHxW, got shape {tuple(image.shape)}")
    else:
        raise TypeError(f"image must be a numpy array or a tensor, got {type(image).__name__}")
    out["image"] = image
    mask = out.get("mask")
    if mask is not None:
        mask = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask).to(torch.int64)
        if mask.shape != image.shape[1:]:
            raise ValueError(f"mask shape {tuple(mask.shape)} differs from image size {tuple(image.shape[1:])}")
        out["mask"] = mask
    return out


def _uniform(generator: torch.Generator | None, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def _randint(generator: torch.Generator | None, low: int, high: int) -> int:
    """An int in ``[low, high)`` (numpy's ``randint`` convention)."""
    return int(torch.randint(low, high, (), generator=generator).item())


def _pair(x: Any) -> tuple:
    if isinstance(x, (int, float)):
        return (x, x)
    if isinstance(x, Sequence) and len(x) == 2:
        return tuple(x)
    raise ValueError(f"expected a number or a pair, got {x!r}")


def _ignore(value: int) -> int:
    return IGNORE_INDEX if value == _REF_IGNORE else int(value)


# ---------------------------------------------------------------------------------------------
# OpenCV-exact resizing
# ---------------------------------------------------------------------------------------------
def _linear_taps(src: int, dst: int, clamp: bool) -> tuple:
    """Source indices and 11-bit weights of OpenCV's INTER_LINEAR along one axis.

    OpenCV clamps the horizontal taps (index and weight) at the borders but keeps the vertical
    weights and clamps only the row indices; ``clamp`` selects the horizontal rule.
    """
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    if clamp:
        low, high = s < 0, s >= src - 1
        f[low], s[low] = 0, 0
        f[high], s[high] = 0, src - 1
    w0 = (np.float32(1) - f).astype(np.float32)
    i0, i1 = np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1)
    return torch.from_numpy(i0), torch.from_numpy(i1), torch.from_numpy(w0), torch.from_numpy(f)


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """OpenCV ``INTER_LINEAR`` resize of a ``CxHxW`` image to ``size=(h, w)``.

    ``uint8`` images follow OpenCV's fixed-point arithmetic (bit-exact with ``cv2.resize``);
    float images use the same taps in float32.
    """
    h, w = image.shape[-2:]
    dh, dw = int(size[0]), int(size[1])
    if (dh, dw) == (h, w):
        return image.clone()
    x0, x1, ax0, ax1 = _linear_taps(w, dw, clamp=True)
    y0, y1, by0, by1 = _linear_taps(h, dh, clamp=False)
    if image.dtype == torch.uint8:
        one = np.float32(2048)
        ax0, ax1 = (torch.round(a * one).to(torch.int32) for a in (ax0, ax1))
        by0, by1 = (torch.round(b * one).to(torch.int32)[:, None] for b in (by0, by1))
        src = image.to(torch.int32)
        rows = torch.index_select(src, -1, x0).mul_(ax0)  # C x H x dW, weights sum to 2048
        rows.add_(torch.index_select(src, -1, x1).mul_(ax1)).bitwise_right_shift_(4)
        out = torch.index_select(rows, -2, y0).mul_(by0).bitwise_right_shift_(16)
        out.add_(torch.index_select(rows, -2, y1).mul_(by1).bitwise_right_shift_(16))
        return out.add_(2).bitwise_right_shift_(2).clamp_(0, 255).to(torch.uint8)
    src = image.to(torch.float32)
    rows = torch.index_select(src, -1, x0) * ax0 + torch.index_select(src, -1, x1) * ax1
    out = torch.index_select(rows, -2, y0) * by0[:, None] + torch.index_select(rows, -2, y1) * by1[:, None]
    return out.to(image.dtype) if image.is_floating_point() else out


def _nearest_index(src: int, dst: int) -> torch.Tensor:
    ifx = 1.0 / (dst / src)
    idx = np.floor(np.arange(dst) * ifx).astype(np.int64)
    return torch.from_numpy(np.minimum(idx, src - 1))


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """OpenCV ``INTER_NEAREST`` resize of a ``...xHxW`` label map to ``size=(h, w)`` (exact)."""
    h, w = mask.shape[-2:]
    out = torch.index_select(mask, -2, _nearest_index(h, int(size[0])))
    return torch.index_select(out, -1, _nearest_index(w, int(size[1])))


# ---------------------------------------------------------------------------------------------
# OpenCV-exact 8-bit HSV
# ---------------------------------------------------------------------------------------------
_SDIV = torch.tensor([0] + [int(round((255 << 12) / i)) for i in range(1, 256)], dtype=torch.int64)
_HDIV = torch.tensor([0] + [int(round((180 << 12) / (6.0 * i))) for i in range(1, 256)], dtype=torch.int64)


def rgb_to_hsv_cv2(image: torch.Tensor) -> torch.Tensor:
    """``cv2.cvtColor(rgb, COLOR_RGB2HSV)`` for a ``uint8`` ``3xHxW`` tensor (H in [0, 180))."""
    r, g, b = image.to(torch.int64).unbind(0)
    v = torch.maximum(torch.maximum(r, g), b)
    vmin = torch.minimum(torch.minimum(r, g), b)
    diff = v - vmin
    s = (diff * _SDIV[v] + (1 << 11)) >> 12
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _HDIV[diff] + (1 << 11)) >> 12
    h = torch.where(h < 0, h + 180, h)
    return torch.stack([h, s, v]).to(torch.uint8)


def hsv_to_rgb_cv2(hsv: torch.Tensor) -> torch.Tensor:
    """``cv2.cvtColor(hsv, COLOR_HSV2RGB)`` for a ``uint8`` ``3xHxW`` tensor (H in [0, 180]).

    Follows OpenCV's vectorised 8-bit path (float32 with fused multiply-adds, truncation), which is
    bit-exact with ``cv2`` on every HSV triple; OpenCV's scalar path for the last ``W mod 32``
    pixels of a row (AVX2 builds) rounds instead of truncating, so those may differ by one level.
    """
    h, s, v = hsv.to(torch.float32).unbind(0)
    s, v = s * np.float32(1 / 255), v * np.float32(1 / 255)
    h = h * np.float32(6 / 180)
    pre = torch.trunc(h)
    f = h - pre
    sector = (pre - torch.trunc(pre * np.float32(1 / 6)) * 6).to(torch.int64).clamp_(0, 5)
    one = torch.ones((), dtype=torch.float64)
    s64 = s.to(torch.float64)
    t2 = (one - s64 * f.to(torch.float64)).to(torch.float32)  # fma(-s, f, 1)
    t3 = (one - s64 * (1 - f).to(torch.float64)).to(torch.float32)
    tab = torch.stack([v, v * (1 - s), v * t2, v * t3])  # 4 x H x W
    sector_bgr = torch.tensor([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]])
    pick = sector_bgr[sector].permute(2, 0, 1)  # (b, g, r) rows of tab per pixel
    rgb = torch.gather(tab, 0, pick).flip(0) * np.float32(255)
    return torch.trunc(rgb).clamp_(0, 255).to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------------------------
class Transform:
    """Base class: ``transform(sample, generator=None) -> sample``."""

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def _resize_sample(sample: dict, size: tuple[int, int]) -> dict:
    sample["image"] = resize_image(sample["image"], size)
    for key in ("mask", "edge"):
        if sample.get(key) is not None:
            sample[key] = resize_mask(sample[key], size)
    return sample


@register_transform("Resize")
class Resize(Transform):
    """Resize to ``output_size`` (randomly scaled by ``scale_range`` unless it is None).

    With ``keep_ratio`` the image fits inside the (long, short) sides of ``output_size`` (the
    reference's rule, orientation free); without it the image takes ``output_size`` with its long
    side along the image's long side. ``min_size`` raises the short side to at least that.
    """

    def __init__(self, output_size, keep_ratio: bool = True, min_size: int | None = None,
                 scale_range=(0.5, 2.0), image_interpolation: str = "bilinear",
                 seg_target_interpolation: str = "nearest", img2aug_pos_mapper_interpolation: str = "nearest"):
        if image_interpolation != "bilinear" or seg_target_interpolation != "nearest":
            raise ValueError("Resize supports image_interpolation='bilinear' and "
                             "seg_target_interpolation='nearest' only")
        self.output_size = _pair(output_size)
        self.keep_ratio = bool(keep_ratio)
        self.min_size = min_size
        self.scale_range = None if scale_range is None else tuple(scale_range)

    def target_size(self, height: int, width: int, generator: torch.Generator | None = None) -> tuple[int, int]:
        """The ``(h, w)`` an image of that size is resized to (draws the random scale)."""
        if self.scale_range is not None:
            scale = _uniform(generator, self.scale_range[0], self.scale_range[1])
            out = int(self.output_size[0] * scale), int(self.output_size[1] * scale)
        else:
            out = self.output_size
        if self.keep_ratio:
            factor = min(max(out) / max(height, width), min(out) / min(height, width))
            dw, dh = int(width * factor + 0.5), int(height * factor + 0.5)
            if self.min_size is not None and min(dw, dh) < self.min_size:
                factor = self.min_size / min(height, width)
                dw, dh = int(width * factor + 0.5), int(height * factor + 0.5)
            return dh, dw
        if height > width:
            return max(out), min(out)
        return min(out), max(out)

    def __call__(self, sample, generator=None):
        h, w = sample["image"].shape[-2:]
        return _resize_sample(sample, self.target_size(h, w, generator))


@register_transform("ResizeShortestEdge")
class ResizeShortestEdge(Transform):
    """Resize the short side to ``short_edge_length`` (the min of a sequence) capping the long side at ``max_size``."""

    def __init__(self, short_edge_length, max_size: int, **resize_kwargs):
        self.short_edge_length = short_edge_length
        self.max_size = max_size
        self.resize_kwargs = resize_kwargs

    def __call__(self, sample, generator=None):
        h, w = sample["image"].shape[-2:]
        size = float(min(self.short_edge_length) if isinstance(self.short_edge_length, Sequence)
                     else self.short_edge_length)
        scale = size / min(h, w)
        new_h, new_w = (size, scale * w) if h < w else (scale * h, size)
        if max(new_h, new_w) > self.max_size:
            scale = self.max_size / max(new_h, new_w)
            new_h, new_w = new_h * scale, new_w * scale
        out = (int(new_w + 0.5), int(new_h + 0.5))  # the reference hands (w, h) on as Resize's output_size
        kwargs = {**self.resize_kwargs, "output_size": out, "keep_ratio": True, "scale_range": None}
        return Resize(**kwargs)(sample, generator)


@register_transform("RandomChoiceResize")
class RandomChoiceResize(Transform):
    """Resize with one of ``scales`` drawn uniformly (``resize_type`` 'Resize' or 'ResizeShortestEdge')."""

    def __init__(self, scales, resize_type: str = "Resize", **resize_kwargs):
        if resize_type not in ("Resize", "ResizeShortestEdge"):
            raise ValueError(f"RandomChoiceResize: unsupported resize_type {resize_type!r}")
        self.scales = list(scales) if isinstance(scales, Sequence) else [scales]
        self.resize_type = resize_type
        self.resize_kwargs = resize_kwargs

    def __call__(self, sample, generator=None):
        scale = self.scales[_randint(generator, 0, len(self.scales))]
        if self.resize_type == "Resize":
            transform = Resize(**{**self.resize_kwargs, "output_size": scale})
        else:
            transform = ResizeShortestEdge(**{**self.resize_kwargs, "short_edge_length": scale})
        return transform(sample, generator)


def crop(sample: dict, top: int, left: int, height: int, width: int) -> dict:
    """``sample`` cropped to ``[top:top+height, left:left+width]`` (image, mask, edge)."""
    out = dict(sample)
    for key in ("image", "mask", "edge"):
        if out.get(key) is not None:
            out[key] = out[key][..., top:top + height, left:left + width]
    return out


@register_transform("RandomCrop")
class RandomCrop(Transform):
    """A random ``crop_size`` window (clipped to the image) where no class covers
    ``one_category_max_ratio`` or more of the labelled pixels, trying 10 windows (the last one wins).

    A window with no labelled pixel at all leaves the sample uncropped, as in the reference.
    """

    def __init__(self, crop_size, ignore_index: int = IGNORE_INDEX, one_category_max_ratio: float = 0.75,
                 max_tries: int = 10):
        self.crop_size = _pair(crop_size)
        self.ignore_index = _ignore(ignore_index)
        self.one_category_max_ratio = one_category_max_ratio
        self.max_tries = max_tries

    def __call__(self, sample, generator=None):
        h, w = sample["image"].shape[-2:]
        ch, cw = min(self.crop_size[0], h), min(self.crop_size[1], w)
        counts = None
        for _ in range(self.max_tries):
            top, left = _randint(generator, 0, h - ch + 1), _randint(generator, 0, w - cw + 1)
            out = crop(sample, top, left, ch, cw)
            labels, counts = torch.unique(out["mask"], return_counts=True)
            counts = counts[labels != self.ignore_index]
            if len(counts) > 1 and counts.max().item() / counts.sum().item() < self.one_category_max_ratio:
                break
        if counts is None or len(counts) == 0:
            return sample
        return out


@register_transform("RandomFlip")
class RandomFlip(Transform):
    """Horizontal flip of image and mask with probability ``prob``; ``fixed_seg_target_pairs``
    swaps left/right labels after a flip (human parsing)."""

    def __init__(self, prob: float = 0.5, fixed_seg_target_pairs=None):
        self.prob = prob
        self.fixed_seg_target_pairs = fixed_seg_target_pairs

    def __call__(self, sample, generator=None):
        if _uniform(generator) > self.prob:
            return sample
        return self.flip(sample)

    def flip(self, sample: dict) -> dict:
        """The flipped sample (deterministic)."""
        for key in ("image", "mask", "edge"):
            if sample.get(key) is not None:
                sample[key] = sample[key].flip(-1)
        if self.fixed_seg_target_pairs and sample.get("mask") is not None:
            mask = sample["mask"]
            swapped = mask.clone()
            for a, b in self.fixed_seg_target_pairs:
                swapped[mask == a] = b
                swapped[mask == b] = a
            sample["mask"] = swapped
        return sample


def _convert(x: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
    return (x.to(torch.float32) * alpha + beta).clamp_(0, 255).to(torch.uint8)


@register_transform("PhotoMetricDistortion")
class PhotoMetricDistortion(Transform):
    """Random brightness, contrast (before or after), saturation and hue, each with probability 1/2,
    on a ``uint8`` image (the reference's order of draws and 8-bit arithmetic)."""

    def __init__(self, brightness_delta: float = 32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                 hue_delta: int = 18):
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = int(hue_delta)

    def __call__(self, sample, generator=None):
        image = sample["image"]
        if image.dtype != torch.uint8:
            raise ValueError("PhotoMetricDistortion needs a uint8 image: put it before Normalize/ToTensor")
        if _randint(generator, 0, 2):
            image = _convert(image, beta=_uniform(generator, -self.brightness_delta, self.brightness_delta))
        mode = _randint(generator, 0, 2)
        if mode == 1:
            image = self._contrast(image, generator)
        if _randint(generator, 0, 2):
            image = self.saturation(image, _uniform(generator, *self.saturation_range))
        if _randint(generator, 0, 2):
            image = self.hue(image, _randint(generator, -self.hue_delta, self.hue_delta))
        if mode == 0:
            image = self._contrast(image, generator)
        sample["image"] = image
        return sample

    def _contrast(self, image, generator):
        if not _randint(generator, 0, 2):
            return image
        return _convert(image, alpha=_uniform(generator, *self.contrast_range))

    # The reference converts its BGR image with COLOR_RGB2HSV: we do the same on our image in BGR order.
    @staticmethod
    def saturation(image: torch.Tensor, alpha: float) -> torch.Tensor:
        """The reference's saturation step with factor ``alpha`` (deterministic)."""
        hsv = rgb_to_hsv_cv2(image.flip(0))
        hsv[1] = _convert(hsv[1], alpha=alpha)
        return hsv_to_rgb_cv2(hsv).flip(0)

    @staticmethod
    def hue(image: torch.Tensor, delta: int) -> torch.Tensor:
        """The reference's hue step with shift ``delta`` (deterministic)."""
        hsv = rgb_to_hsv_cv2(image.flip(0))
        hsv[0] = torch.remainder(hsv[0].to(torch.int64) + delta, 180).to(torch.uint8)
        return hsv_to_rgb_cv2(hsv).flip(0)


@register_transform("RandomRotation")
class RandomRotation(Transform):
    """Rotation by an integer angle in ``[-angle_upper, angle_upper)`` with probability ``prob``
    about OpenCV's centre ``(w/2, h/2)``; outside pixels get the fill values (mask: ignore)."""

    def __init__(self, prob: float = 0.5, angle_upper: int = 30, image_fill_value: float = 0.0,
                 seg_target_fill_value: int = IGNORE_INDEX, image_interpolation: str = "bicubic",
                 seg_target_interpolation: str = "nearest", img2aug_pos_mapper_fill_value: int = -1,
                 img2aug_pos_mapper_interpolation: str = "nearest"):
        if image_interpolation not in ("bicubic", "bilinear", "nearest") or seg_target_interpolation != "nearest":
            raise ValueError("RandomRotation supports image_interpolation bicubic/bilinear/nearest and "
                             "seg_target_interpolation='nearest'")
        self.image_interpolation = image_interpolation
        self.prob = prob
        self.angle_upper = int(angle_upper)
        self.image_fill_value = image_fill_value
        self.seg_target_fill_value = _ignore(seg_target_fill_value)

    def __call__(self, sample, generator=None):
        if _uniform(generator) > self.prob:
            return sample
        angle = _randint(generator, -self.angle_upper, self.angle_upper)
        return self.rotate(sample, angle)

    def rotate(self, sample: dict, angle: float) -> dict:
        """``sample`` rotated by ``angle`` degrees (counter-clockwise, as ``cv2.getRotationMatrix2D``)."""
        image = sample["image"]
        h, w = image.shape[-2:]
        a = math.radians(angle)
        alpha, beta = math.cos(a), math.sin(a)
        cx, cy = w / 2, h / 2
        m = torch.tensor([[alpha, beta, (1 - alpha) * cx - beta * cy],
                          [-beta, alpha, beta * cx + (1 - alpha) * cy]], dtype=torch.float64)
        inv = torch.linalg.inv(torch.cat([m, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)]))[:2]
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
        sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
        sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
        grid = torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], -1)[None].to(torch.float32)

        def warp(x: torch.Tensor, mode: str, fill: float) -> torch.Tensor:
            x3 = x.reshape(-1, h, w).to(torch.float32)[None]
            ones = torch.ones_like(x3[:, :1])
            out = F.grid_sample(torch.cat([x3, ones], 1), grid, mode=mode, padding_mode="zeros", align_corners=False)
            inside = out[:, -1:] > 0.999 if mode != "nearest" else out[:, -1:] > 0.5
            out = torch.where(inside, out[:, :-1], torch.full_like(out[:, :-1], fill))[0]
            if x.dtype == torch.uint8:
                out = out.round().clamp(0, 255)
            return out.to(x.dtype).reshape(x.shape)

        sample["image"] = warp(image, self.image_interpolation, self.image_fill_value)
        if sample.get("mask") is not None:
            sample["mask"] = warp(sample["mask"], "nearest", self.seg_target_fill_value)
        return sample


@register_transform("EdgeExtractor")
class EdgeExtractor(Transform):
    """Adds ``edge``: ``int64`` 0/1 map of label boundaries (4 neighbour directions, ignore excluded),
    dilated by an ``edge_width`` square."""

    def __init__(self, edge_width: int = 3, ignore_index: int = IGNORE_INDEX):
        self.edge_width = int(edge_width)
        self.ignore_index = _ignore(ignore_index)

    def __call__(self, sample, generator=None):
        m, ig = sample["mask"], self.ignore_index
        edge = torch.zeros(m.shape, dtype=torch.bool)

        def differ(a, b):
            return (a != b) & (a != ig) & (b != ig)

        edge[1:, :] |= differ(m[1:, :], m[:-1, :])
        edge[:, :-1] |= differ(m[:, :-1], m[:, 1:])
        edge[:-1, :-1] |= differ(m[:-1, :-1], m[1:, 1:])
        edge[:-1, 1:] |= differ(m[:-1, 1:], m[1:, :-1])
        k = self.edge_width
        lo = k // 2
        padded = F.pad(edge[None, None].to(torch.float32), (lo, k - 1 - lo, lo, k - 1 - lo))
        sample["edge"] = F.max_pool2d(padded, k, stride=1)[0, 0].to(torch.int64)
        return sample


@register_transform("Normalize")
class Normalize(Transform):
    """``(image - mean) / std`` as a float32 image (``mean``/``std`` in the output channel order);
    ``to_rgb=False`` gives the BGR image the reference then normalizes."""

    def __init__(self, mean, std, to_rgb: bool = True):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.to_rgb = bool(to_rgb)
        self._mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        self._stdinv = torch.tensor([1.0 / s for s in self.std], dtype=torch.float64)[:, None, None]

    def __call__(self, sample, generator=None):
        image = sample["image"].to(torch.float32)
        if not self.to_rgb:
            image = image.flip(0)
        # as OpenCV: float32 subtraction of the float32 mean, float64 product with 1/std rounded to float32
        sample["image"] = ((image - self._mean).to(torch.float64) * self._stdinv).to(torch.float32)
        return sample


@register_transform("ToTensor")
class ToTensor(Transform):
    """Float32 image (no rescaling, as the reference) and ``int64`` mask/edge."""

    def __call__(self, sample, generator=None):
        sample["image"] = sample["image"].to(torch.float32)
        for key in ("mask", "edge"):
            if sample.get(key) is not None:
                sample[key] = sample[key].to(torch.int64)
        return sample


@register_transform("Padding")
class Padding(Transform):
    """Pad image (``image_fill_value``) and mask/edge (ignore) around the centre to ``output_size``
    (swapped to the image's orientation when ``output_size_auto_adaptive``); a larger side is
    cropped around the centre, as the reference's tensor path does."""

    def __init__(self, output_size, data_type: str = "tensor", image_fill_value: float = 0,
                 seg_target_fill_value: int = IGNORE_INDEX, edge_target_fill_value: int = IGNORE_INDEX,
                 output_size_auto_adaptive: bool = True, img2aug_pos_mapper_fill_value: int = -1):
        if data_type not in ("numpy", "tensor"):
            raise ValueError(f"Padding: data_type must be 'numpy' or 'tensor', got {data_type!r}")
        self.output_size = _pair(output_size)
        self.data_type = data_type
        self.image_fill_value = image_fill_value
        self.seg_target_fill_value = _ignore(seg_target_fill_value)
        self.edge_target_fill_value = _ignore(edge_target_fill_value)
        self.output_size_auto_adaptive = output_size_auto_adaptive

    def __call__(self, sample, generator=None):
        h, w = sample["image"].shape[-2:]
        oh, ow = self.output_size
        if self.output_size_auto_adaptive and ((h > w and oh < ow) or (h < w and oh > ow)):
            oh, ow = ow, oh
        top, left = (oh - h) // 2, (ow - w) // 2
        pad = (left, ow - w - left, top, oh - h - top)
        fills = {"image": self.image_fill_value, "mask": self.seg_target_fill_value,
                 "edge": self.edge_target_fill_value}
        for key, fill in fills.items():
            x = sample.get(key)
            if x is None:
                continue
            if x.ndim == 2:
                sample[key] = F.pad(x[None], pad, value=fill)[0]
            else:
                sample[key] = F.pad(x, pad, value=fill)
        return sample


# ---------------------------------------------------------------------------------------------
# pipelines
# ---------------------------------------------------------------------------------------------
class Compose:
    """Transforms applied in order to one sample.

    ``pipeline(sample, generator=None) -> sample`` for a dict sample (numpy or tensor), or
    ``pipeline(image, mask, generator=None) -> (image, mask)``.
    """

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, sample, mask=None, generator: torch.Generator | None = None):
        if isinstance(mask, torch.Generator):
            mask, generator = None, mask
        if isinstance(sample, Mapping):
            out = to_sample(sample)
            for t in self.transforms:
                out = t(out, generator)
            return out
        out = self(to_sample({"image": sample, "mask": mask}), generator=generator)
        return out["image"], out.get("mask")

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"Compose([\n  {inner}\n])"


def build_pipeline(pipeline: Sequence) -> Compose:
    """A :class:`Compose` from a recipe list: ``[name, kwargs]`` pairs, ``{"type": name, ...}``
    dicts or ready transforms (e.g. ``model_info(name)["recipe"]["train_pipeline"]``)."""
    if isinstance(pipeline, (str, bytes)) or not isinstance(pipeline, Sequence):
        raise ValueError(f"a pipeline is a list of [name, kwargs] steps, got {type(pipeline).__name__}: "
                         f"{str(pipeline)[:80]!r}")
    transforms = []
    for i, step in enumerate(pipeline):
        if callable(step) and not isinstance(step, (Mapping, Sequence)):
            transforms.append(step)
            continue
        if isinstance(step, Mapping):
            kwargs = dict(step)
            name = kwargs.pop("type", None)
        elif (isinstance(step, Sequence) and not isinstance(step, str) and len(step) == 2
              and isinstance(step[1], Mapping)):
            name, kwargs = step[0], dict(step[1])
        else:
            raise ValueError(f"pipeline step {i} is not [name, kwargs] or {{'type': name, ...}}: {step!r}")
        if name not in TRANSFORMS:
            raise ValueError(f"pipeline step {i}: unknown transform {name!r} (known: {', '.join(sorted(TRANSFORMS))})")
        try:
            transforms.append(TRANSFORMS[name](**kwargs))
        except TypeError as err:
            raise ValueError(f"pipeline step {i} ({name}): {err}") from None
    return Compose(transforms)
