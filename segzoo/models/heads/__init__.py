"""Decode heads; importing this package imports (and so registers) every head file in it."""
from .._registry import import_submodules
from .base import HEADS, DecodeHead, build_head, register_head

import_submodules(__name__, __path__)

__all__ = ["HEADS", "DecodeHead", "build_head", "register_head"]
