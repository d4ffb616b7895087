"""Backbone registry.

A backbone is an ``nn.Module`` whose forward returns a list of NCHW feature maps
(finest first) and which exposes ``out_channels`` (list) and ``reductions`` (list), and
may declare ``min_input_size`` (the smallest side it accepts; inference pads smaller images up
to it, default 1) and ``frozen_inference_pays`` (whether a traced, frozen, BatchNorm-folded copy
runs faster than the eager network on the CPU, as measured for the family; default False).
Builders are registered by type name with :func:`register_backbone` and build random networks;
each family module (:func:`backbone_family`) also provides ``convert_<format>(state_dict) ->
state_dict`` functions that map a foreign backbone state dict (prefix already stripped) to its own
keys, and ``imagenet_weights(cfg)``: where the config's ImageNet weights are (``{"timm": name}`` or
``{"sources": [...], "label": ...}``; ValueError where none are known), which
``segzoo._factory.load_imagenet`` fetches, converts with ``convert_timm`` (then the optional
``adapt_imagenet(sd, backbone)``) and loads strictly.
"""
from __future__ import annotations

import inspect
import sys
from types import ModuleType
from typing import Callable

import torch.nn as nn

from .._registry import registrar

__all__ = ["BACKBONES", "register_backbone", "build_backbone", "backbone_family", "add_fresh_out_norms"]

BACKBONES: dict[str, Callable[..., nn.Module]] = {}


register_backbone = registrar(BACKBONES)  # @register_backbone("resnet") on a builder function


def backbone_family(kind: str) -> ModuleType:
    """The module that registered backbone type ``kind``: its family file, which also holds the
    ``convert_<format>`` key converters and the SSSegmentation translation."""
    if kind not in BACKBONES:
        raise ValueError(f"unknown backbone type {kind!r}; known: {', '.join(sorted(BACKBONES))}")
    return sys.modules[BACKBONES[kind].__module__]


def build_backbone(cfg: dict) -> nn.Module:
    """The randomly initialised backbone ``cfg`` describes. ``pretrained_tag`` (which ImageNet weights
    ``imagenet_weights`` picks) is not part of the network and is ignored here."""
    cfg = dict(cfg)
    cfg.pop("pretrained_tag", None)
    kind = cfg.pop("type")
    if kind not in BACKBONES:
        raise ValueError(f"unknown backbone type {kind!r}; known: {', '.join(sorted(BACKBONES))}")
    builder = BACKBONES[kind]
    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(cfg) - set(params))
        if unknown:
            known = sorted(params)
            raise TypeError(f"unknown {kind} backbone option{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    return builder(**cfg)


def add_fresh_out_norms(sd: dict, width_key: str, prefix: str = "out_norms", num_stages: int = 4) -> dict:
    """Give an ImageNet classifier's state dict the per-stage output norms a segmentation backbone
    adds (weight 1, bias 0: their initialisation, as in the references). ``width_key`` is a key
    pattern with ``{i}`` whose tensor's first dimension is stage i's width."""
    import torch
    for i in range(num_stages):
        w = sd.get(width_key.format(i=i))
        if w is not None and f"{prefix}.{i}.weight" not in sd:
            sd[f"{prefix}.{i}.weight"] = torch.ones(w.shape[0], dtype=w.dtype)
            sd[f"{prefix}.{i}.bias"] = torch.zeros(w.shape[0], dtype=w.dtype)
    return sd
