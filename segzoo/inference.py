"""Inference: images in, label maps / probabilities / logits out, at the input's original size.

The protocol is the one each checkpoint was evaluated with (SSSegmentation's ``test.py``): the
record's test-time resize, normalisation, ``whole`` or ``slide`` forward, multi-scale and flip
averaging, and softmax before the final resize where the record says so.

* whole: one forward pass over the (resized) image; the head-resolution scores go straight to
  the original size.
* slide: the same window grid as SSSegmentation's slide inference; windows run ``batch_size`` at
  a time, each window's logits are upsampled to the window size and added into a single
  full-size score buffer (which may live on ``score_device``, e.g. the CPU, while the model runs
  on a GPU); the overlap count is divided out at the end. Memory is bounded by the batch, not by
  the number of windows.
* test-time augmentation: for each scale (bilinear rescale of the normalised image) the scores of
  the image and, with ``flip``, of its mirror image (mirrored back) are resized to the original
  size and averaged.

``segzoo predict`` (in ``segzoo.cli``) runs it over files and folders.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InvalidImageError

__all__ = ["InvalidImageError", "InferenceConfig", "predict", "load_image", "resolve_config",
           "resized_shape", "window_grid", "whole_inference", "slide_inference", "frozen_forward", "default_batch_size", "colorize",
           "overlay"]

_IMAGENET = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
_OUTPUTS = ("labels", "probs", "logits")
_IMAGE_HINT = "pass a path, a PIL image or an HxWx3 uint8 numpy array"


# ---- images ---------------------------------------------------------------------------------------
_PIL_TO_RGB = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


def _from_pil(img, what: str) -> np.ndarray:
    if img.mode not in _PIL_TO_RGB:
        raise InvalidImageError(f"{what}: unsupported PIL mode {img.mode!r} (16-bit or float pixels); "
                                "convert it to 8-bit RGB first")
    if img.width == 0 or img.height == 0:
        raise InvalidImageError(f"{what}: empty image ({img.width}x{img.height})")
    return np.array(img.convert("RGB") if img.mode != "RGB" else img, dtype=np.uint8)


def _from_path(path, what: str) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError
    path = Path(path)
    if not path.is_file():
        raise InvalidImageError(f"{what}: no such file: {str(path)!r}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)  # as cv2.imread does
            img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"{what}: cannot read {str(path)!r} as an image ({type(exc).__name__})") from None
    return _from_pil(img, what)


def _from_array(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.size == 0:
        raise InvalidImageError(f"{what}: empty array of shape {arr.shape}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise InvalidImageError(f"{what}: expected an HxW or HxWxC array, got {arr.ndim} dimensions {arr.shape}")
    if arr.shape[2] not in (1, 3, 4):
        hint = "; it looks channel-first, use arr.transpose(1, 2, 0)" if arr.shape[0] in (1, 3, 4) else ""
        raise InvalidImageError(f"{what}: expected 1, 3 or 4 channels in the last axis, got shape {arr.shape}{hint}")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise InvalidImageError(f"{what}: float array contains NaN or infinite values")
        arr = arr.astype(np.float32, copy=False)
        if arr.min() >= 0.0 and arr.max() <= 1.0:
            import warnings
            warnings.warn(f"{what}: every value of this float image lies within 0..1, but float images are read "
                          "as 0..255 (like uint8); multiply by 255 first if it is a 0..1 image", UserWarning,
                          stacklevel=4)
    else:
        raise InvalidImageError(f"{what}: unsupported dtype {arr.dtype}; expected uint8 (or float with 0..255 values)")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def _writable(arr: np.ndarray) -> np.ndarray:
    return arr if arr.flags.writeable else arr.copy()


def load_image(image, what: str = "image") -> np.ndarray:
    """An HxWx3 RGB array (uint8, or float32 with 0..255 values) from a path, PIL image or numpy array.
    Grayscale and RGBA inputs become RGB (alpha dropped); anything else raises :class:`InvalidImageError`."""
    if isinstance(image, (str, os.PathLike)):
        return _from_path(image, what)
    if isinstance(image, np.ndarray):
        return _from_array(image, what)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        return _from_pil(image, what)
    if isinstance(image, torch.Tensor):
        raise InvalidImageError(f"{what}: got a torch.Tensor; {_IMAGE_HINT} (for a normalised NCHW tensor call "
                                "model(x) directly)")
    raise InvalidImageError(f"{what}: unsupported type {type(image).__name__}; {_IMAGE_HINT}, or a list of those")


# ---- protocol -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InferenceConfig:
    """The resolved test-time protocol for one ``predict`` call."""

    mode: str = "whole"
    crop_size: tuple | None = None                # (h, w)
    stride: tuple | None = None                   # (h, w)
    scales: tuple = (1.0,)
    flip: bool = False
    probs_before_resize: bool = False
    resize: Mapping[str, Any] | None = None       # {"size": [a, b], "keep_ratio": bool}
    mean: tuple = tuple(_IMAGENET["mean"])
    std: tuple = tuple(_IMAGENET["std"])
    align_corners: bool = False


def _pair(value, name: str) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair (h, w) of positive ints, got {value!r}") from None
    if h <= 0 or w <= 0 or (h, w) != tuple(value):
        raise ValueError(f"{name} must be an int or a pair (h, w) of positive ints, got {value!r}")
    return h, w


def _resize_spec(value) -> dict | None:
    if value is None or value is False:
        return None
    if value is True:
        raise ValueError("resize=True is ambiguous: leave it unset for the record's resize, or pass a size pair")
    if isinstance(value, Mapping):
        size, keep = value.get("size"), bool(value.get("keep_ratio", True))
    else:
        size, keep = value, True
    try:
        a, b = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError("resize must be False, a size pair or {'size': [a, b], 'keep_ratio': bool}, "
                         f"got {value!r}") from None
    if a <= 0 or b <= 0:
        raise ValueError(f"resize size must be positive, got {size!r}")
    return {"size": [a, b], "keep_ratio": keep}


def resolve_config(model: nn.Module, *, mode=None, crop_size=None, stride=None, scales=None, flip=None,
                   resize=None) -> InferenceConfig:
    """Merge the call's arguments over the model record's ``inference`` and ``normalization``.
    ``resize=None`` keeps the record's test-time resize, ``resize=False`` turns it off."""
    record = getattr(model, "record", None)
    inf = dict(getattr(record, "inference", None) or {})
    norm = dict(getattr(record, "normalization", None) or {}) or _IMAGENET
    mode = mode if mode is not None else inf.get("mode") or "whole"
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    crop = _pair(crop_size if crop_size is not None else inf.get("crop_size") or getattr(record, "crop_size", None),
                 "crop_size")
    stride = _pair(stride if stride is not None else inf.get("stride"), "stride")
    if mode == "slide":
        if crop is None:
            raise ValueError("slide mode needs crop_size (the record has none)")
        if stride is None:
            stride = (max(1, crop[0] * 2 // 3), max(1, crop[1] * 2 // 3))
    scales = scales if scales is not None else inf.get("scales") or (1.0,)
    if isinstance(scales, (int, float)):
        scales = (scales,)
    try:
        scales = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        raise ValueError(f"scales must be a sequence of positive numbers, got {scales!r}") from None
    if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales!r}")
    mean, std = tuple(float(v) for v in norm["mean"]), tuple(float(v) for v in norm["std"])
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"normalization needs 3 means and 3 positive stds, got {norm!r}")
    return InferenceConfig(
        mode=mode, crop_size=crop, stride=stride, scales=scales,
        flip=bool(flip if flip is not None else inf.get("flip", False)),
        probs_before_resize=bool(inf.get("probs_before_resize", False)),
        resize=_resize_spec(inf.get("resize") if resize is None else resize),
        mean=mean, std=std, align_corners=bool(getattr(model, "align_corners", False)))


def resized_shape(height: int, width: int, size: Sequence[int], keep_ratio: bool = True) -> tuple[int, int]:
    """(h, w) after the test-time resize, as SSSegmentation's ``Resize`` computes it: with
    ``keep_ratio`` the scale is ``min(max(size) / max(h, w), min(size) / min(h, w))`` and each side
    is rounded half up (and kept >= 1); without it the longer side gets ``max(size)``, the shorter
    ``min(size)``."""
    long_, short = max(size), min(size)
    if keep_ratio:
        scale = min(long_ / max(height, width), short / min(height, width))
        return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))
    return (long_, short) if height > width else (short, long_)


def window_grid(height: int, width: int, crop_size, stride) -> tuple[list, list]:
    """Row intervals and column intervals ``[(start, stop), ...]`` of the slide-inference windows;
    the windows are their product (rows outer, columns inner), all of the same size."""
    def axis(size, crop, step):
        n = max(size - crop + step - 1, 0) // step + 1
        spans = []
        for i in range(n):
            stop = min(i * step + crop, size)
            spans.append((max(stop - crop, 0), stop))
        return spans
    return axis(height, crop_size[0], stride[0]), axis(width, crop_size[1], stride[1])


# ---- tensors --------------------------------------------------------------------------------------
def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _pad_to_min(x: torch.Tensor, min_size: int) -> torch.Tensor:
    """``x`` zero-padded (the mean colour, once normalised) at the bottom and right so that each side
    is at least ``min_size``; ``x`` itself when it is large enough."""
    h, w = x.shape[-2:]
    if h >= min_size and w >= min_size:
        return x
    return F.pad(x, (0, max(min_size - w, 0), 0, max(min_size - h, 0)))


@torch.inference_mode()
def whole_inference(model: nn.Module, x: torch.Tensor, *, probs: bool = False) -> torch.Tensor:
    """Scores of the whole normalised batch ``x`` at the head's resolution (softmax with ``probs``).
    An image smaller than the network's ``min_input_size`` is padded up to it and its scores come
    back cropped to the image, at the image's resolution."""
    device, dtype = _model_device_dtype(model)
    x = x.to(device=device, dtype=dtype)
    xp = _pad_to_min(x, int(getattr(model, "min_input_size", 1)))
    out = model(xp).float()
    if xp is not x:
        ac = bool(getattr(model, "align_corners", False))
        out = F.interpolate(out, size=xp.shape[-2:], mode="bilinear", align_corners=ac)[..., :x.shape[-2], :x.shape[-1]]
    return out.softmax(dim=1) if probs else out


def _upsample_into(logits: torch.Tensor, out: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """``F.interpolate(logits, size=out.shape[-2:], mode="bilinear")`` written into ``out``: the same
    kernel, without a fresh full-window allocation (and its page faults) for every batch."""
    try:
        return torch.ops.aten.upsample_bilinear2d.out(logits, list(out.shape[-2:]), align_corners, None, None,
                                                      out=out)
    except (RuntimeError, TypeError, AttributeError):  # pragma: no cover - an aten without the out= overload
        return out.copy_(F.interpolate(logits, size=out.shape[-2:], mode="bilinear", align_corners=align_corners))


def default_batch_size(device) -> int:
    """Windows per forward pass when the caller sets none: 4 on an accelerator, 1 on the CPU, where
    batching large windows is slower (bigger activations, no parallelism left to gain)."""
    return 1 if torch.device(device).type == "cpu" else 4


def _weights_version(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or written in place."""
    return tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))


def _agrees(fast: torch.Tensor, eager: torch.Tensor, rtol: float = 1e-4) -> bool:
    """Fast-path logits equal the eager ones to float rounding: within ``rtol`` of the largest
    logit, and the same label wherever the eager top-two margin exceeds twice that difference."""
    if fast.shape != eager.shape or not torch.isfinite(fast).all():
        return False
    diff = float((fast - eager).abs().max())
    if diff > rtol * float(eager.abs().max().clamp_min(1e-12)):
        return False
    if eager.shape[1] < 2:
        return True
    top2 = eager.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * diff
    return bool((fast.argmax(1) == eager.argmax(1))[clear].all())


class _FastForward:
    """The network of one input shape, traced, frozen and optimised for inference
    (``torch.jit.optimize_for_inference``: BatchNorm folded into the convs, weights pre-packed for
    oneDNN), checked against the eager network on its first input and given up for the eager one
    on any failure.

    The first call runs the eager network and the optimised copy on the same input and keeps the
    copy only if its logits agree (:func:`_agrees`); a failure at trace time, at run time (oneDNN's
    adaptive pooling refuses sizes its bins do not divide: PSPNet, UPerNet) or a disagreement
    leaves the eager network serving every call, as does a later run-time failure of the copy.
    Each fallback is one debug log line. (The frozen trace without the oneDNN step was tried as a
    second candidate: slower than eager on PSPNet and UPerNet, so it is not offered.)"""

    def __init__(self, model: nn.Module):
        self.model = model
        self.fast = None
        self.state = "new"  # new -> fast | eager

    def _give_up(self, what: str, exc) -> None:
        import logging
        logging.getLogger("segzoo").debug("fast inference path (%s) not used for %s: %s", what,
                                          type(self.model).__name__, exc)

    def _build(self, x: torch.Tensor):
        """The traced, frozen, oneDNN-optimised network for ``x``'s shape."""
        import warnings
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings: the trace is specialised to this shape on purpose
            traced = torch.jit.trace(self.model.eval(), torch.zeros(x.shape, dtype=x.dtype, device=x.device),
                                     check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.state == "fast":
            try:
                return self.fast(x)
            except Exception as exc:  # noqa: BLE001 - any run-time failure: the eager network serves
                self._give_up("run", exc)
                self.state, self.fast = "eager", None
        if self.state == "eager":
            return self.model(x)
        eager = self.model(x)  # first call: build the copy, keep it only if it agrees
        self.state = "eager"
        try:
            fn = self._build(x)
        except Exception as exc:  # noqa: BLE001
            self._give_up("trace", exc)
            return eager
        try:
            out = fn(x)
        except Exception as exc:  # noqa: BLE001
            self._give_up("first run", exc)
            return eager
        if not _agrees(out.float(), eager.float()):
            self._give_up("check", "its logits differ from the eager network's")
            return eager
        self.state, self.fast = "fast", fn
        return out


def frozen_forward(model: nn.Module, example: torch.Tensor):
    """A CPU fast path for many forward passes of one input shape (see :class:`_FastForward`): a
    traced, frozen, BatchNorm-folded copy of the eval-mode network, verified against the eager one
    on its first input; equal to float rounding (~1e-6 relative), never failing where the eager
    network works. Cached on the model per (shape, dtype, device) and rebuilt when the weights change;
    one shape at a time (a frozen graph holds its own copy of the weights)."""
    cache = model.__dict__.setdefault("_segzoo_frozen", {})
    key = (tuple(example.shape), example.dtype, str(example.device))
    version = _weights_version(model)
    hit = cache.get(key)
    if hit is not None and hit[0] == version:
        return hit[1]
    cache.clear()
    fn = _FastForward(model)
    cache[key] = (version, fn)
    return fn


@torch.inference_mode()
def slide_inference(model: nn.Module, x: torch.Tensor, crop_size, stride, *, batch_size: int | None = None,
                    probs: bool = False, align_corners: bool | None = None, score_device=None,
                    optimize: bool | None = None) -> torch.Tensor:
    """Sliding-window scores (N, C, H, W) of the normalised batch ``x`` (N, 3, H, W).

    Windows (and images of the batch) go through the model ``batch_size`` at a time (default:
    :func:`default_batch_size`); each window's logits are upsampled to the window size (softmax
    after it with ``probs``) and added in place into one float32 buffer on ``score_device``
    (default: ``x``'s device); the buffer is divided by the overlap count at the end. ``optimize``
    runs the windows through :func:`frozen_forward` (default: on the CPU when there are at least
    three batches of windows and the network says a frozen copy pays, ``frozen_inference_pays``).
    Windows smaller than the network's ``min_input_size`` are padded up to it and cropped back.
    Besides the score buffer, memory holds one batch of windows, whatever the image size."""
    device, dtype = _model_device_dtype(model)
    batch_size = default_batch_size(device) if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if align_corners is None:
        align_corners = bool(getattr(model, "align_corners", False))
    score_device = torch.device(score_device) if score_device is not None else x.device
    n, _, height, width = x.shape
    rows, cols = window_grid(height, width, crop_size, stride)
    windows = [(i, r, c) for i in range(n) for r in rows for c in cols]
    if optimize is None:  # worth a trace when the CPU runs the same window shape several times
        optimize = (device.type == "cpu" and len(windows) >= 3 * batch_size
                    and bool(getattr(model, "frozen_inference_pays", False)))
    min_size = int(getattr(model, "min_input_size", 1))
    scores = up = staged = None
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        crops = torch.cat([x[i:i + 1, :, y1:y2, x1:x2] for i, (y1, y2), (x1, x2) in chunk])
        # windows smaller than the network accepts are padded up to it; the padding is cropped off below
        crops = _pad_to_min(crops.to(device=device, dtype=dtype), min_size)
        net = frozen_forward(model, crops) if optimize and len(chunk) == batch_size else model
        logits = net(crops).float()
        b, c = logits.shape[:2]
        if up is None:  # reused by every batch: (batch, C, crop h, crop w) on the model's device
            up = torch.empty((min(batch_size, len(windows)), c, *crops.shape[-2:]), dtype=torch.float32,
                             device=logits.device)
            scores = torch.zeros((n, c, height, width), dtype=torch.float32, device=score_device)
        win = _upsample_into(logits, up[:b], align_corners)
        win = win[..., :rows[0][1] - rows[0][0], :cols[0][1] - cols[0][0]]  # drop the padding, if any
        if probs:
            win = win.softmax(dim=1)
        if win.device != score_device:
            if staged is None:
                staged = torch.empty((up.shape[0], *win.shape[1:]), dtype=torch.float32, device=score_device)
            win = staged[:b].copy_(win)
        for k, (i, (y1, y2), (x1, x2)) in enumerate(chunk):
            scores[i, :, y1:y2, x1:x2] += win[k]
    # the windows form a grid, so the overlap count is (rows covering y) * (columns covering x)
    count_h = torch.zeros(height, dtype=torch.float32, device=score_device)
    count_w = torch.zeros(width, dtype=torch.float32, device=score_device)
    for y1, y2 in rows:
        count_h[y1:y2] += 1
    for x1, x2 in cols:
        count_w[x1:x2] += 1
    return scores.div_(count_h[:, None] * count_w[None, :])


def _scores(model, x: torch.Tensor, cfg: InferenceConfig, size, *, probs: bool, batch_size: int | None,
            score_device, optimize: bool | None = None) -> torch.Tensor:
    """Averaged (C, H, W) scores at ``size`` for one normalised image ``x`` (1, 3, h, w)."""
    ac = cfg.align_corners
    total, count = None, 0
    for scale in cfg.scales:
        xs = x if scale == 1.0 else F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=ac)
        for mirrored in ((False, True) if cfg.flip else (False,)):
            xi = xs.flip(3) if mirrored else xs
            if cfg.mode == "slide":
                s = slide_inference(model, xi, cfg.crop_size, cfg.stride, batch_size=batch_size, probs=probs,
                                    align_corners=ac, score_device=score_device, optimize=optimize)
            else:
                s = whole_inference(model, xi, probs=probs).to(score_device)
            if mirrored:
                s = s.flip(3)
            s = F.interpolate(s, size=size, mode="bilinear", align_corners=ac) if tuple(s.shape[-2:]) != tuple(size) \
                else s
            total = s if total is None else total.add_(s)
            count += 1
    return (total / count)[0]


def _prepare(rgb: np.ndarray, cfg: InferenceConfig, device) -> torch.Tensor:
    """Resize (bilinear, as the record's test pipeline) and normalise an HxWx3 image -> (1, 3, h, w) float32."""
    x = torch.from_numpy(_writable(rgb)).to(device).permute(2, 0, 1)[None].float()
    if cfg.resize is not None:
        size = resized_shape(rgb.shape[0], rgb.shape[1], cfg.resize["size"], cfg.resize["keep_ratio"])
        if size != tuple(rgb.shape[:2]):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    inv_std = 1.0 / torch.tensor(cfg.std, dtype=torch.float64, device="cpu")
    return (x - mean) * inv_std.to(device=device, dtype=torch.float32).view(1, 3, 1, 1)


def predict(model: nn.Module, image, *, mode: str | None = None, crop_size=None, stride=None, scales=None,
            flip: bool | None = None, output: str = "labels", batch_size: int | None = None, device=None,
            score_device=None, resize=None, optimize: bool | None = None):
    """Segment ``image`` (a path, PIL image, HxWx3 uint8 numpy array, or a list of those).

    Returns, at the input's original size, an HxW int64 array of class ids (``output="labels"``),
    CxHxW float32 probabilities (``"probs"``) or CxHxW float32 logits (``"logits"``, averaged raw
    logits even where the record averages probabilities); a list for a list input.

    Unset arguments come from ``model.record``: mode, crop_size, stride, scales, flip, the test-time
    resize (``resize=False`` skips it; a size pair or ``{"size", "keep_ratio"}`` replaces it) and the
    normalisation. The model runs in eval mode under ``torch.inference_mode`` on its own device
    (``device`` moves it there first); the full-size score buffers live on ``score_device``
    (default: the model's device). Slide windows run ``batch_size`` per forward pass (default: 4
    on an accelerator, 1 on the CPU); ``optimize`` (default: on the CPU when there are at least
    three batches of windows) runs them through a traced, frozen copy of the network
    (:func:`frozen_forward`, equal to float rounding), ``optimize=False`` keeps the eager model.
    """
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(map(repr, _OUTPUTS))}, got {output!r}")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    cfg = resolve_config(model, mode=mode, crop_size=crop_size, stride=stride, scales=scales, flip=flip,
                         resize=resize)
    many = isinstance(image, (list, tuple))
    items = list(image) if many else [image]
    # read every input first: a bad one fails before any compute
    arrays = [load_image(img, f"image {i}" if many else "image") for i, img in enumerate(items)]
    if device is not None:
        model.to(torch.device(device))
    model_device, _ = _model_device_dtype(model)
    score_device = torch.device(score_device) if score_device is not None else model_device
    probs = cfg.probs_before_resize and output != "logits"
    was_training = model.training
    model.eval()
    results = []
    try:
        with torch.inference_mode():
            for rgb in arrays:
                x = _prepare(rgb, cfg, model_device)
                s = _scores(model, x, cfg, rgb.shape[:2], probs=probs, batch_size=batch_size, optimize=optimize,
                            score_device=score_device)
                if output == "labels":
                    results.append(s.argmax(dim=0).cpu().numpy().astype(np.int64))
                elif output == "probs":
                    if getattr(model, "outputs_scores", False):  # class scores >= 0, not logits: normalised
                        s = s / s.sum(dim=0, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)
                    elif not probs:
                        s = s.softmax(dim=0)
                    results.append(s.cpu().numpy().astype(np.float32))
                else:
                    results.append(s.cpu().numpy().astype(np.float32))
    finally:
        model.train(was_training)
    return results if many else results[0]


# ---- command line ---------------------------------------------------------------------------------
def _palette(num_classes: int, dataset: str | None) -> np.ndarray:
    palette = None
    if dataset:
        try:
            from .zoo import dataset_meta
            palette = dataset_meta(dataset).get("palette")
        except KeyError:
            palette = None
    pal = np.zeros((max(num_classes, 1), 3), dtype=np.uint8)
    if palette:
        m = min(len(palette), len(pal))
        pal[:m] = np.asarray(palette[:m], dtype=np.uint8)
    else:
        m = 0
    for i in range(m, len(pal)):  # classes the dataset has no colour for: a fixed pseudo-random colour
        pal[i] = np.random.default_rng(i).integers(0, 256, 3, dtype=np.uint8)
    return pal


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 colours of a label map."""
    return palette[np.clip(labels, 0, len(palette) - 1)]


def overlay(rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The palette colours of ``labels`` blended over ``rgb`` with opacity ``alpha``."""
    base = np.clip(rgb.astype(np.float32), 0, 255)
    out = (1.0 - alpha) * base + alpha * colorize(labels, palette).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _image_files(specs) -> tuple[list[Path], list[str]]:
    """The image files named by ``specs`` (files, or folders whose image files are taken in sorted
    order) and one message for each spec that names nothing usable."""
    from PIL import Image
    exts = {e.lower() for e in Image.registered_extensions()}
    paths, problems = [], []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in exts)
            if not found:
                problems.append(f"{spec}: no image files in this folder")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            problems.append(f"{spec}: no such file or folder")
    return paths, problems
