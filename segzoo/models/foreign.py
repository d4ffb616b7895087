"""What a family file declares about foreign formats, and the tables that collect it.

A backbone or head file holds, after its module, how it reads every foreign format it loads:

* key rules: ``(regex, replacement)`` pairs applied by :func:`rename_key` (or a converter
  function where renaming is not enough, e.g. split or transposed tensors);
* its translation from an SSSegmentation config to segzoo's ``arch``, registered with
  :func:`ssseg_backbone` (backbones) or :func:`ssseg_segmentor` (one per SSSegmentation
  segmentor type: segzoo's segmentor name, the decode-head translation and its key rules);
* for transformers checkpoints, a converter registered with :func:`transformers_segmentor`.

``segzoo.convert`` dispatches over these tables; nothing lists the supported families by hand.
Torch-free: rules and translations are plain data and functions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import UnsupportedConfig

__all__ = ["UnsupportedConfig", "rename_key", "rename_keys", "check_defaults", "check_options", "head_options", "cna_rules", "dsconv_rules",
           "sequential_rules", "SSSegSegmentor", "SSSEG_BACKBONES", "SSSEG_SEGMENTORS", "TRANSFORMERS_SEGMENTORS",
           "ssseg_backbone", "ssseg_segmentor", "transformers_segmentor", "ssseg_segmentor_for"]

Rules = Sequence[tuple[str, str]]


# ---- key rules --------------------------------------------------------------------------------------
def rename_key(key: str, rules: Rules) -> str | None:
    """``key`` rewritten by the first ``(pattern, replacement)`` rule that matches it; None when none
    does (callers keep unknown keys as they are, so the strict load that follows names them)."""
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return None


def rename_keys(sd: dict, rules: Rules) -> dict:
    """Every key rewritten by its first matching rule; keys no rule knows are kept."""
    return {(rename_key(k, rules) or k): v for k, v in sd.items()}


def cna_rules(src: str, dst: str) -> list[tuple[str, str]]:
    """An SSSegmentation ``Sequential(conv, norm, act)`` at ``src`` (a regex) -> segzoo ``ConvNormAct`` at ``dst``."""
    return [(rf"^{src}\.0\.", f"{dst}.conv."), (rf"^{src}\.1\.", f"{dst}.bn.")]


def dsconv_rules(src: str, dst: str) -> list[tuple[str, str]]:
    """An SSSegmentation ``DepthwiseSeparableConv2d`` -> segzoo ``SeparableConvNormAct``."""
    return [(rf"^{src}\.{a}_{b}\.", f"{dst}.{a}.{c}.") for a in ("depthwise", "pointwise")
            for b, c in (("conv", "conv"), ("bn", "bn"))]


def sequential_rules(src: str, dst: str, num_convs: int) -> list[tuple[str, str]]:
    """An SSSegmentation FCN-style ``Sequential([conv, norm, act] * n, dropout, classifier)`` at
    ``src`` -> segzoo ``FCNHead`` keys at ``dst`` (``convs.i.conv``, ``convs.i.bn``, ``classifier``)."""
    rules = []
    for i in range(num_convs):
        rules += [(rf"^{src}\.{3 * i}\.", f"{dst}.convs.{i}.conv."), (rf"^{src}\.{3 * i + 1}\.", f"{dst}.convs.{i}.bn.")]
    return rules + [(rf"^{src}\.{3 * num_convs + 1}\.", f"{dst}.classifier.")]


# ---- SSSegmentation config translation -------------------------------------------------------------
def check_defaults(cfg: dict, **defaults) -> None:
    """Raise :class:`UnsupportedConfig` when ``cfg`` sets one of these options to another value."""
    for key, value in defaults.items():
        if key in cfg and cfg[key] != value:
            raise UnsupportedConfig(f"{cfg.get('type', 'config')} with {key}={cfg[key]!r} is not ported "
                                    f"(only {value!r})")


def check_options(options, allowed, what: str) -> None:
    """Raise :class:`UnsupportedConfig` naming the options of ``what`` (e.g. "CCNet head") outside
    ``allowed``: options that are not ported."""
    extra = set(options) - set(allowed)
    if extra:
        raise UnsupportedConfig(f"{what} options {sorted(extra)} are not ported")


def head_options(cfg: dict) -> dict:
    """The options every SSSegmentation decode head sets: ``feats_channels`` and ``dropout``."""
    head = cfg["head"]
    return {"channels": int(head["feats_channels"]), "dropout": float(head.get("dropout", 0.1))}


@dataclass(frozen=True)
class SSSegSegmentor:
    """How one SSSegmentation segmentor type becomes segzoo's.

    ``decode_head(cfg, selected_indices) -> dict``: the ``arch["decode_head"]`` of the config (raises
    :class:`UnsupportedConfig` for options it does not build exactly); ``key_rules(arch) -> rules``:
    the decode head's SSSegmentation keys -> segzoo's (the auxiliary heads' and the backbone's are
    the dispatcher's and the backbone family's). Where the segmentor differs there:
    ``backbone(cfg, translated) -> arch["backbone"]`` (an encoder that wraps the backbone, ICNet's)
    and ``aux_heads(cfg, selected_indices) -> arch["aux_heads"]`` (PointRend's coarse classifier)."""
    ssseg_type: str
    segmentor: str
    decode_head: Callable[[dict, list], dict]
    key_rules: Callable[[dict], Rules]
    backbone: Callable[[dict, dict], dict] | None = None
    aux_heads: Callable[[dict, list], list] | None = None


SSSEG_BACKBONES: dict[str, Callable[[dict], dict]] = {}   # ssseg backbone type -> translator
SSSEG_SEGMENTORS: dict[str, SSSegSegmentor] = {}          # ssseg segmentor type -> translation
TRANSFORMERS_SEGMENTORS: dict[str, Callable] = {}         # segzoo segmentor -> converter


def ssseg_backbone(ssseg_type: str):
    """Decorator: ``fn(backbone_cfg) -> arch["backbone"]`` translates SSSegmentation's ``ssseg_type``."""
    def deco(fn):
        SSSEG_BACKBONES[ssseg_type] = fn
        return fn
    return deco


def ssseg_segmentor(ssseg_type: str, segmentor: str, key_rules: Callable[[dict], Rules] | Rules, *,
                    backbone: Callable[[dict, dict], dict] | None = None,
                    aux_heads: Callable[[dict, list], list] | None = None):
    """Decorator on ``fn(cfg, selected_indices) -> arch["decode_head"]``: SSSegmentation's
    ``ssseg_type`` is segzoo's ``segmentor`` with that head; ``key_rules`` (a list, or a function of
    the ``arch``) map its decode head's keys; ``backbone`` / ``aux_heads``: see :class:`SSSegSegmentor`."""
    rules = key_rules if callable(key_rules) else (lambda arch, _r=list(key_rules): _r)

    def deco(fn):
        SSSEG_SEGMENTORS[ssseg_type] = SSSegSegmentor(ssseg_type, segmentor, fn, rules, backbone, aux_heads)
        return fn
    return deco


def ssseg_segmentor_for(segmentor: str) -> SSSegSegmentor:
    """The translation whose segzoo segmentor is ``segmentor``."""
    for spec in SSSEG_SEGMENTORS.values():
        if spec.segmentor == segmentor:
            return spec
    raise ValueError(f"no SSSegmentation checkpoint layout is known for segmentor {segmentor!r}; "
                     f"known: {', '.join(sorted(s.segmentor for s in SSSEG_SEGMENTORS.values()))}")


TRANSFORMERS_KEY_PREFIXES: set = set()  # filled by transformers_segmentor(key_prefixes=...)


def transformers_segmentor(segmentor: str, key_prefixes: tuple = ()):
    """Decorator on ``fn(sd, arch) -> (backbone_sd, head_sd)``: splits a transformers checkpoint of
    segzoo's ``segmentor`` into the backbone's keys (prefix stripped, still in transformers' names, for
    the backbone family's ``convert_transformers``) and the rest, already in segzoo's names.
    ``key_prefixes``: key beginnings that only this family's transformers checkpoints have
    (``"beit."``), by which ``segzoo.convert.detect_format`` recognises them."""
    def deco(fn):
        TRANSFORMERS_SEGMENTORS[segmentor] = fn
        TRANSFORMERS_KEY_PREFIXES.update(key_prefixes)
        return fn
    return deco
