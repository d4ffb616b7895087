"""create_model: record -> network -> weights (strict) -> device."""
from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any, Mapping

import torch
import torch.nn as nn

from .errors import CheckpointMismatchError
from .registry import get_record

_log = logging.getLogger("segzoo")


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


def checkpoint_num_classes(sd: Mapping[str, torch.Tensor]) -> int | None:
    """The class count a segzoo-layout state dict was trained for (its decode head's classifier)."""
    w = sd.get("decode_head.classifier.weight")
    return int(w.shape[0]) if w is not None and w.ndim == 4 else None


def _adapt_record(record, num_classes: int, class_names=None):
    """``record`` for a model with ``num_classes`` outputs: class names given, kept when the count
    is the record's, cleared otherwise (with the dataset and metrics, which no longer apply)."""
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names for num_classes={num_classes}")
    if num_classes == record.num_classes:
        return record if class_names is None else dataclasses.replace(record, class_names=class_names)
    return dataclasses.replace(record, num_classes=num_classes, class_names=class_names or (), metrics={},
                               dataset="", arch=dict(record.arch, num_classes=num_classes))


def create_model(name: str, pretrained: bool = False, *, num_classes: int | None = None, checkpoint=None,
                 pretrained_backbone: bool = False, device=None, class_names=None, **overrides: Any):
    from . import hub
    from .models import build_model

    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool)
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if isinstance(name, str) and name.startswith(("hf-hub:", "local-dir:")):  # weights from there, always
        record = hub.record_from_pretrained_dir(name)
        checkpoint = checkpoint or name
    else:
        record = get_record(name)
    arch = _merge(record.arch, overrides) if overrides else copy.deepcopy(dict(record.arch))
    provenance: dict = {"model": record.name, "source": dict(record.source)}
    if checkpoint is not None or pretrained:
        def load(sd, fmt, src):  # a "timm" checkpoint is a backbone-only one
            load_state_dict_strict(model, sd, prefix="backbone." if fmt == "timm" else "", source=src)

        if checkpoint is not None:
            sd, fmt, src = hub.load_checkpoint(checkpoint, arch)
            saved = hub.saved_config(checkpoint)  # config.json beside a save_pretrained folder
            # the checkpoint's own head size builds the model it fits (a fine-tuned model's, say)
            own = checkpoint_num_classes(sd) if fmt != "timm" else None
            if own is not None and own != arch["num_classes"]:
                arch["num_classes"] = own
                record = _adapt_record(record, own, (saved or {}).get("class_names") or None)
            elif saved and saved.get("class_names") and len(saved["class_names"]) == arch["num_classes"]:
                record = _adapt_record(record, arch["num_classes"], saved["class_names"])
            model = build_model(arch, num_classes=arch["num_classes"])
            load(sd, fmt, src)
            provenance.update(init="checkpoint", checkpoint=src, format=fmt,
                              previous=(saved or {}).get("provenance"))
        else:  # the hub caches the conversion once it loaded
            model = build_model(arch, num_classes=arch["num_classes"])
            sd, fmt, src = hub.load_pretrained(record, arch, load=load)
            provenance.update(init="pretrained", checkpoint=src, format=fmt)
        _log.info("%s: loaded %s weights from %s", record.name, fmt, src)
        if num_classes is not None and num_classes != arch["num_classes"]:
            reset = _reset_classifiers(model, num_classes)
            model.arch = dict(model.arch, num_classes=num_classes)
            provenance["new_classifier"] = {"num_classes": num_classes, "was": arch["num_classes"], "layers": reset}
            _log.warning("%s: num_classes=%d differs from the checkpoint's %d; re-initialised %s",
                         record.name, num_classes, arch["num_classes"], ", ".join(reset))
        if pretrained_backbone:
            _log.info("pretrained_backbone ignored: the full checkpoint already sets the backbone")
    else:
        model = build_model(arch, num_classes=num_classes, pretrained_backbone=pretrained_backbone)
        provenance.update(init="random", pretrained_backbone=bool(pretrained_backbone))
    model.record = _adapt_record(record, int(model.arch["num_classes"]), class_names)
    model.provenance = provenance
    if device is not None:
        model.to(torch.device(device))
    return model.eval()
