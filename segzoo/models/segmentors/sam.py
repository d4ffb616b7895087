"""Registers Segment Anything (``segzoo.models.sam``) as segmentor ``"sam"``; it builds itself from
its arch with ``Sam.from_arch`` (no backbone / decode head)."""
from __future__ import annotations

from ..sam import Sam
from ..segmentor import register_segmentor

__all__ = ["Sam"]

register_segmentor("sam")(Sam)
