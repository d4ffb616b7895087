"""create_model: record -> network -> weights (strict) -> device."""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn as nn

from .registry import get_record

_log = logging.getLogger("segzoo")


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose keys or shapes do not match the model exactly."""


def _merge(base: dict, over: dict, path: str = "") -> dict:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if k not in out:
            raise TypeError(f"unknown override {path + k!r}; arch keys: {', '.join(sorted(out))}")
        out[k] = _merge(out[k], v, f"{path}{k}.") if isinstance(v, dict) and isinstance(out[k], dict) else v
    return out


def load_state_dict_strict(model: nn.Module, sd: dict, *, prefix: str = "", source: str = "checkpoint") -> None:
    """Load ``sd`` into ``model`` (or its ``prefix`` submodule); every key must be used and every
    parameter and buffer provided, with matching shapes, else the error lists the offenders."""
    target = model.get_submodule(prefix.rstrip(".")) if prefix else model
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)} if prefix else sd
    own = target.state_dict()
    unused = sorted(set(sd) - set(own))
    missing = sorted(set(own) - set(sd))
    shapes = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(sd) & set(own) if tuple(sd[k].shape) != tuple(own[k].shape))
    if unused or missing or shapes:
        def fmt(label, items):
            if not items:
                return ""
            more = f" (+{len(items) - 20} more)" if len(items) > 20 else ""
            return f"\n  {label} ({len(items)}): {', '.join(items[:20])}{more}"
        raise CheckpointMismatchError(f"{source} does not match the model" + fmt("unused keys", unused)
                                      + fmt("missing keys", missing) + fmt("shape mismatches", shapes))
    target.load_state_dict(sd, strict=True)


def _reset_classifiers(model: nn.Module, num_classes: int) -> list[str]:
    names = []
    for name, module in model.named_modules():
        cls = getattr(module, "classifier", None)
        if isinstance(cls, nn.Conv2d) and cls.out_channels != num_classes:
            module.classifier = nn.Conv2d(cls.in_channels, num_classes, kernel_size=1).to(cls.weight.device)
            names.append(f"{name}.classifier" if name else "classifier")
    return names


def create_model(name: str, pretrained: bool = False, *, num_classes: int | None = None, checkpoint=None,
                 pretrained_backbone: bool = False, device=None, **overrides: Any):
    from . import hub
    from .models import build_model

    if isinstance(name, str) and name.startswith(("hf-hub:", "local-dir:")):
        record = hub.record_from_pretrained_dir(name)
        checkpoint = checkpoint or name
    else:
        record = get_record(name)
    arch = _merge(record.arch, overrides) if overrides else copy.deepcopy(dict(record.arch))
    if checkpoint is not None or pretrained:
        model = build_model(arch, num_classes=arch["num_classes"])

        def load(sd, fmt, src):  # a "timm" checkpoint is a backbone-only one
            load_state_dict_strict(model, sd, prefix="backbone." if fmt == "timm" else "", source=src)

        if checkpoint is not None:
            sd, fmt, src = hub.load_checkpoint(checkpoint, arch)
            load(sd, fmt, src)
        else:  # the hub caches the conversion once it loaded
            sd, fmt, src = hub.load_pretrained(record, arch, load=load)
        _log.info("%s: loaded %s weights from %s", record.name, fmt, src)
        if num_classes is not None and num_classes != arch["num_classes"]:
            reset = _reset_classifiers(model, num_classes)
            model.arch = dict(model.arch, num_classes=num_classes)
            _log.warning("%s: num_classes=%d differs from the checkpoint's %d; re-initialised %s",
                         record.name, num_classes, arch["num_classes"], ", ".join(reset))
    else:
        model = build_model(arch, num_classes=num_classes, pretrained_backbone=pretrained_backbone)
    if pretrained_backbone and (checkpoint is not None or pretrained):
        _log.info("pretrained_backbone ignored: the full checkpoint already sets the backbone")
    model.record = record
    if device is not None:
        model.to(torch.device(device))
    return model.eval()
