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


def import_submodules(package: str, path) -> None:
    """Import every module of a package (its families register themselves on import), so no
    ``__init__`` keeps a list of them. Private modules (``_name``) are left alone."""
    import importlib
    import pkgutil
    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
