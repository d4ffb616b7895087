"""Model records and name lookup.

Records are plain data (see :class:`ModelRecord`); each family module under
``segzoo.zoo`` declares its own and registers them here. Nothing in this module
imports torch, so listing models stays fast.
"""
from __future__ import annotations

import copy
import difflib
import fnmatch
import importlib
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

__all__ = ["ModelRecord", "register", "get_record", "list_models", "model_info", "UnknownModelError"]

# segzoo.zoo modules that declare records; imported on first lookup.
_ZOO_MODULES = (
    "segzoo.zoo.sssegmentation",
    "segzoo.zoo.transformers_hub",
)


class UnknownModelError(KeyError):
    """Raised for a model name that is not registered; the message names the closest ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class ModelRecord:
    """Everything segzoo knows about one named model: architecture, weights, protocol, recipe."""

    name: str
    architecture: str            # segmentor family, e.g. "upernet"
    backbone: str                # backbone variant, e.g. "swin_base"
    dataset: str
    num_classes: int
    arch: Mapping[str, Any]      # the network definition handed to segzoo.models.build_model
    class_names: tuple = ()
    crop_size: tuple = (512, 512)
    inference: Mapping[str, Any] = field(default_factory=dict)
    normalization: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    weights: tuple = ()          # tuple of dicts: {hf_hub_id | url, filename, format, revision?, sha256?}
    source: Mapping[str, Any] = field(default_factory=dict)
    recipe: Mapping[str, Any] = field(default_factory=dict)

    @property
    def has_weights(self) -> bool:
        return bool(self.weights)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["crop_size"] = list(self.crop_size)
        d["weights"] = [dict(w) for w in self.weights]
        return copy.deepcopy(d)


_REGISTRY: dict[str, ModelRecord] = {}
_loaded = False


def register(record: ModelRecord) -> ModelRecord:
    if record.name in _REGISTRY:
        raise ValueError(f"model name registered twice: {record.name}")
    _REGISTRY[record.name] = record
    return record


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _ZOO_MODULES:
        importlib.import_module(mod)


def _suggest(name: str, names: Iterable[str]) -> str:
    names = list(names)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    if not close:
        # fall back on shared prefix tokens (e.g. "upernet_swin" -> every upernet_swin_*)
        stem = name.lower().split("_")[0]
        close = [n for n in names if n.startswith(stem)][:5]
    return f"; did you mean: {', '.join(close)}?" if close else ""


def get_record(name: str) -> ModelRecord:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}{_suggest(name, _REGISTRY)}") from None


def list_models(pattern: str = "*", *, pretrained: bool = False, dataset: str | None = None,
                architecture: str | None = None, backbone: str | None = None) -> list[str]:
    """Sorted model names matching an fnmatch-style ``pattern`` and the given filters."""
    _ensure_loaded()
    out = []
    for name, rec in _REGISTRY.items():
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        if pretrained and not rec.has_weights:
            continue
        if dataset is not None and rec.dataset != dataset:
            continue
        if architecture is not None and rec.architecture != architecture:
            continue
        if backbone is not None and not fnmatch.fnmatchcase(rec.backbone, backbone):
            continue
        out.append(name)
    return sorted(out)


def model_info(name: str) -> dict:
    """The model record as a JSON-serialisable mapping."""
    return get_record(name).to_dict()
