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
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from .errors import UnknownModelError

__all__ = ["ModelRecord", "register", "unregister", "get_record", "resolve_name", "list_models", "explain_empty", "model_info",
           "UnknownModelError"]



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
_ALIASES: dict[str, str] = {}   # lower-cased Hub repo id / source config name -> record name
_loaded = False


def _aliases_of(record: ModelRecord) -> set:
    """Other names a user may know a record by: its Hub repo ids and its source's config name."""
    out = {record.source.get("repo_id"), record.source.get("config")}
    out.update(w.get("hf_hub_id") for w in record.weights)
    return {a.lower() for a in out if a}


def register(record: ModelRecord) -> ModelRecord:
    if record.name in _REGISTRY:
        raise ValueError(f"model name registered twice: {record.name}")
    _REGISTRY[record.name] = record
    for alias in _aliases_of(record):
        if alias != record.name:
            _ALIASES.setdefault(alias, record.name)
    return record


def unregister(name: str) -> None:
    """Remove a record registered with :func:`register` (and its aliases); unknown names are ignored."""
    _REGISTRY.pop(name, None)
    for alias in [a for a, target in _ALIASES.items() if target == name]:
        del _ALIASES[alias]


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    # every module of segzoo.zoo declares records (segzoo.zoo.record_modules says in which order)
    for mod in importlib.import_module("segzoo.zoo").record_modules():
        importlib.import_module(mod)


def resolve_name(name: str) -> str | None:
    """The registered name that ``name`` stands for: the name itself (any case), a Hub repo id
    (``openmmlab/upernet-swin-base``, with or without ``hf-hub:``) or a source config name; else None."""
    _ensure_loaded()
    if name in _REGISTRY:
        return name
    key = name.strip().lower()
    if key.startswith("hf-hub:"):
        key = key[len("hf-hub:"):].split("@")[0].strip("/")
    if key in _REGISTRY:
        return key
    return _ALIASES.get(key)


# ---- suggestions --------------------------------------------------------------------------------
def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", text.lower()) if t]


def _token_match(query: str, token: str) -> float:
    """How well one query token matches one name token: 1 equal, 0.9 a prefix of it (>= 2 chars),
    the difflib ratio where that is >= 0.75 (typos), else 0."""
    if query == token:
        return 1.0
    if len(query) >= 2 and token.startswith(query):
        return 0.9
    ratio = difflib.SequenceMatcher(None, query, token).ratio()
    return ratio if ratio >= 0.75 else 0.0


def _closest(query: str, names: Iterable[str], n: int = 5) -> list[str]:
    """Names ranked by how many of the query's tokens they contain (exactly, as a prefix or with a
    typo), then by whole-string similarity: ``segformer_b0`` and ``mit_b0`` find ``segformer_mit_b0_*``."""
    q = _tokens(query)
    if not q:
        return []
    scored = []
    for name in names:
        toks = _tokens(name)
        score = sum(max(_token_match(t, u) for u in toks) for t in q) / len(q)
        if score >= 0.5:
            scored.append((-score, -difflib.SequenceMatcher(None, query.lower(), name).ratio(), name))
    scored.sort()
    if not scored:
        return []
    best = -scored[0][0]
    return [name for s, _, name in scored if -s >= best - 0.15][:n]


def _suggest(name: str, names: Iterable[str]) -> str:
    close = _closest(name, list(names))
    return f"; did you mean: {', '.join(close)}?" if close else ""


def get_record(name: str) -> ModelRecord:
    """The record of a registered name or alias (see :func:`resolve_name`); UnknownModelError with
    the closest names otherwise."""
    resolved = resolve_name(name) if isinstance(name, str) else None
    if resolved is None:
        raise UnknownModelError(f"unknown model {name!r}{_suggest(str(name), _REGISTRY)}")
    return _REGISTRY[resolved]


def _values(attr: str) -> list[str]:
    return sorted({getattr(r, attr) for r in _REGISTRY.values()})


def list_models(pattern: str = "*", *, pretrained: bool = False, dataset: str | None = None,
                architecture: str | None = None, backbone: str | None = None) -> list[str]:
    """Sorted model names matching an fnmatch-style ``pattern`` (case-insensitive) and the given
    filters; ``backbone`` is a pattern too. :func:`explain_empty` says why a listing is empty."""
    _ensure_loaded()
    pattern = pattern.lower()
    out = []
    for name, rec in _REGISTRY.items():
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        if pretrained and not rec.has_weights:
            continue
        if dataset is not None and rec.dataset != dataset.lower():
            continue
        if architecture is not None and rec.architecture != architecture.lower():
            continue
        if backbone is not None and not fnmatch.fnmatchcase(rec.backbone, backbone.lower()):
            continue
        out.append(name)
    return sorted(out)


def explain_empty(pattern: str = "*", *, pretrained: bool = False, dataset: str | None = None,
                  architecture: str | None = None, backbone: str | None = None) -> str:
    """One line saying why ``list_models`` with these arguments finds nothing, with the nearest
    valid values (a misspelt dataset, architecture or pattern) where there are any."""
    _ensure_loaded()
    for attr, value in (("dataset", dataset), ("architecture", architecture)):
        if value is not None and value.lower() not in _values(attr):
            close = _closest(value, _values(attr), n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            return f"no {attr} {value!r}; {hint}known: {', '.join(_values(attr))}"
    if backbone is not None and not list_models(backbone=backbone):
        close = _closest(backbone.replace("*", " ").replace("?", " "), _values("backbone"), n=5)
        return f"no backbone matches {backbone!r}" + (f"; did you mean: {', '.join(close)}?" if close else "")
    if not list_models(pattern):
        return f"no model matches {pattern!r}" + _pattern_hint(pattern)
    wanted = {k: v for k, v in (("dataset", dataset), ("architecture", architecture), ("backbone", backbone),
                                ("pretrained", pretrained or None)) if v is not None}
    why = f"no model matches {pattern!r} with {', '.join(f'{k}={v}' for k, v in wanted.items())}"
    if dataset is not None:  # the usual case: the model exists, on other datasets
        others = list_models(pattern, pretrained=pretrained, architecture=architecture, backbone=backbone)
        if others:
            return why + f"; it exists for dataset {', '.join(sorted({_REGISTRY[n].dataset for n in others}))}"
    return why + f"; without the filters {len(list_models(pattern))} models match"


def _pattern_hint(pattern: str) -> str:
    """'; did you mean ...' for a pattern with a misspelt word: each word of the pattern replaced by
    the nearest word of the registered names, else the nearest names."""
    vocab = sorted({t for name in _REGISTRY for t in _tokens(name)})
    fixed = re.sub(r"[a-z0-9]+", lambda m: (_closest(m.group(0), vocab, n=1) or [m.group(0)])[0], pattern.lower())
    if fixed != pattern.lower() and list_models(fixed):
        return f"; did you mean {fixed!r}?"
    close = _closest(re.sub(r"[*?\[\]]", " ", pattern), _REGISTRY)
    return f"; did you mean: {', '.join(close)}?" if close else ""


def model_info(name: str) -> dict:
    """The model record as a JSON-serialisable mapping (``name`` may be an alias, see :func:`resolve_name`)."""
    return get_record(name).to_dict()
