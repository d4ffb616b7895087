"""Decode heads; importing this package registers them all."""
from .base import HEADS, DecodeHead, build_head, register_head
from . import aspp, fcn, ocr, psp, segformer, uper  # noqa: F401  (registration)

__all__ = ["HEADS", "DecodeHead", "build_head", "register_head"]
