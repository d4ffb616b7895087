"""Backbones; importing this package registers them all."""
from .base import BACKBONES, build_backbone, register_backbone
from . import convnext, mit, resnet, swin  # noqa: F401  (registration)

__all__ = ["BACKBONES", "build_backbone", "register_backbone"]
