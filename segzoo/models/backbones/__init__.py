"""Backbones; importing this package imports (and so registers) every backbone file in it."""
from .._registry import import_submodules
from .base import BACKBONES, backbone_family, build_backbone, register_backbone

import_submodules(__name__, __path__)

__all__ = ["BACKBONES", "backbone_family", "build_backbone", "register_backbone"]
