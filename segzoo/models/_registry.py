"""One registration helper for the model tables (backbones, heads, segmentors)."""
from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")


def registrar(table: dict) -> Callable[[str], Callable[[T], T]]:
    """``register(name)`` decorators that put the decorated builder or class into ``table``."""
    def register(name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            table[name] = obj
            return obj
        return deco
    return register
