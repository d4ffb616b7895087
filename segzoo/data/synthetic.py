"""A synthetic segmentation dataset: coloured shapes on textured backgrounds (tests, notebooks)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ._meta import bit_palette
from .datasets import SegmentationDataset, _takes_generator
from .transforms import build_pipeline

__all__ = ["ShapesDataset"]

_SHAPES = ("circle", "square", "triangle")
# a distinct, saturated base colour per shape class (cycled past 9 classes)
_COLOURS = np.array([[220, 40, 40], [40, 180, 60], [50, 80, 230], [230, 200, 30], [200, 50, 210],
                     [30, 200, 210], [240, 130, 20], [120, 60, 20], [250, 250, 250]], dtype=np.float32)


class ShapesDataset(SegmentationDataset):
    """``num_images`` images of ``size=(h, w)`` with 1 to 3 shapes each on a textured background.

    Class 0 is the background; class ``k >= 1`` is a ``circle``, ``square`` or ``triangle`` (cycling
    with ``k``) in its own colour, so appearance determines the class. Item ``i`` depends only on
    ``(seed, i)``; items are ``{"image": uint8 HxWx3, "mask": int64 HxW, "id": str}`` before ``transform``
    (a callable or recipe list, seeded per item as the other datasets).
    """

    name = "shapes"
    title = "ShapesDataset"

    def __init__(self, num_images: int, size: tuple[int, int] = (64, 64), num_classes: int = 4, seed: int = 0,
                 transform: Any = None):
        if num_images < 1:
            raise ValueError(f"ShapesDataset: num_images must be >= 1, got {num_images}")
        if num_classes < 2:
            raise ValueError(f"ShapesDataset: num_classes must be >= 2 (background and a shape), got {num_classes}")
        self.num_images = int(num_images)
        self.size = (int(size[0]), int(size[1]))
        if min(self.size) < 8:
            raise ValueError(f"ShapesDataset: size must be at least 8x8, got {self.size}")
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        self.epoch = 0
        self.split = "train"
        self.root = None
        self.class_names = ["background"] + [
            _SHAPES[(k - 1) % 3] + ("" if k <= 3 else f"_{(k - 1) // 3 + 1}") for k in range(1, num_classes)]
        self.palette = bit_palette(num_classes)
        self.transform = build_pipeline(transform) if isinstance(transform, (list, tuple)) else transform
        self._seeded = self.transform is not None and _takes_generator(self.transform)
        self.samples = [(f"shapes_{i:06d}", None, None) for i in range(self.num_images)]

    def load(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index, 0x5EED])
        h, w = self.size
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        # background: a grey base colour, a random stripe pattern and per-pixel noise
        base = (rng.uniform(70, 150) + rng.uniform(-15, 15, 3)).astype(np.float32)  # greyish, unlike the shapes
        angle, freq = rng.uniform(0, np.pi), rng.uniform(0.15, 0.6)
        stripes = np.sin(freq * (xs * np.cos(angle) + ys * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
        image = base + 25 * stripes[..., None] + rng.normal(0, 8, (h, w, 3)).astype(np.float32)
        mask = np.zeros((h, w), dtype=np.int64)
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(1, self.num_classes))
            radius = rng.uniform(0.12, 0.3) * min(h, w)
            cy, cx = rng.uniform(radius, h - radius), rng.uniform(radius, w - radius)
            region = _shape(_SHAPES[(k - 1) % 3], ys - cy, xs - cx, radius, rng.uniform(0, 2 * np.pi))
            colour = _COLOURS[(k - 1) % len(_COLOURS)] * rng.uniform(0.85, 1.0)
            image[region] = colour + rng.normal(0, 6, (int(region.sum()), 3)).astype(np.float32)
            mask[region] = k
        image = np.clip(image, 0, 255).astype(np.uint8)
        return {"image": image, "mask": mask, "id": self.samples[index][0]}

    def check_masks(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"ShapesDataset({self.num_images} images, size={self.size}, num_classes={self.num_classes})"


def _shape(kind: str, dy: np.ndarray, dx: np.ndarray, r: float, theta: float) -> np.ndarray:
    """Boolean region of a shape of circumradius ``r`` centred at the origin of ``(dy, dx)``."""
    if kind == "circle":
        return dy ** 2 + dx ** 2 <= r ** 2
    c, s = np.cos(theta), np.sin(theta)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if kind == "square":
        half = r / np.sqrt(2)
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    # equilateral triangle: inside three half-planes at distance r/2 from the centre
    inside = np.ones_like(dy, dtype=bool)
    for a in (0.0, 2 * np.pi / 3, 4 * np.pi / 3):
        inside &= u * np.cos(a) + v * np.sin(a) <= r / 2
    return inside

