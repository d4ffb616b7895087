"""Backbone registry.

A backbone is an ``nn.Module`` whose forward returns a list of NCHW feature maps
(finest first) and which exposes ``out_channels`` (list) and ``reductions`` (list), and
may declare ``min_input_size`` (the smallest side it accepts; inference pads smaller images up
to it, default 1) and ``frozen_inference_pays`` (whether a traced, frozen, BatchNorm-folded copy
runs faster than the eager network on the CPU, as measured for the family; default False).
Builders are registered by type name with :func:`register_backbone`; each family
module also provides ``convert_<format>(state_dict) -> state_dict`` functions that
map a foreign backbone state dict (prefix already stripped) to its own keys.
"""
from __future__ import annotations

import inspect
import sys
from types import ModuleType
from typing import Callable

import torch.nn as nn

from .._registry import registrar

__all__ = ["BACKBONES", "register_backbone", "build_backbone", "backbone_family", "add_fresh_out_norms", "create_timm_pretrained"]

BACKBONES: dict[str, Callable[..., nn.Module]] = {}


register_backbone = registrar(BACKBONES)  # @register_backbone("resnet") on a builder function


def backbone_family(kind: str) -> ModuleType:
    """The module that registered backbone type ``kind``: its family file, which also holds the
    ``convert_<format>`` key converters and the SSSegmentation translation."""
    if kind not in BACKBONES:
        raise ValueError(f"unknown backbone type {kind!r}; known: {', '.join(sorted(BACKBONES))}")
    return sys.modules[BACKBONES[kind].__module__]


def build_backbone(cfg: dict, pretrained: bool = False) -> nn.Module:
    cfg = dict(cfg)
    kind = cfg.pop("type")
    if kind not in BACKBONES:
        raise ValueError(f"unknown backbone type {kind!r}; known: {', '.join(sorted(BACKBONES))}")
    builder = BACKBONES[kind]
    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(cfg) - set(params) - {"pretrained"})
        if unknown:
            known = sorted(set(params) - {"pretrained"})
            raise TypeError(f"unknown {kind} backbone option{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    return builder(pretrained=pretrained, **cfg)


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


def create_timm_pretrained(name: str, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=True, **kwargs)`` with the weights fetched by segzoo's
    hub: the timm Hub repo (``model.safetensors``, then ``pytorch_model.bin``), then timm's original
    URL, with the same fallback, cache, ``HF_ENDPOINT`` / ``HF_HUB_OFFLINE`` handling and one clear
    error as every other segzoo download. timm's own key filter still applies to the file."""
    import timm
    from timm.models import get_pretrained_cfg

    from ...hub import fetch_weights
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained weights named {name!r}")
    sources = []
    if cfg.hf_hub_id:
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        sources += [{"hf_hub_id": cfg.hf_hub_id, "filename": f} for f in files]
    if cfg.url:
        sources.append({"url": cfg.url, "filename": cfg.url.rsplit("/", 1)[-1]})
    path, _ = fetch_weights(sources, label=f"ImageNet weights {name}")
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path), "source": ""}, **kwargs)
