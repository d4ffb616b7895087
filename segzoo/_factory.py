"""create_model: record -> network -> weights (strict) -> device.

:func:`build_and_load` is the one place a network gets its weights: ``create_model``, ``segzoo
convert`` and the ImageNet backbone path (``pretrained_backbone=True``) all go through it.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any, Mapping

import torch
import torch.nn as nn

from . import hub
from .api import with_api
from .convert.checkpoint import load_state_dict_strict, read_state_dict
from .models import backbone_family, build_model
from .registry import get_record

_log = logging.getLogger("segzoo")


def _merge(base: dict, over: dict, path: str = "") -> dict:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if k not in out:
            raise TypeError(f"unknown override {path + k!r}; arch keys: {', '.join(sorted(out))}")
        out[k] = _merge(out[k], v, f"{path}{k}.") if isinstance(v, dict) and isinstance(out[k], dict) else v
    return out


def _reset_classifiers(model: nn.Module, num_classes: int) -> list[str]:
    """New classifier layers for ``num_classes``: every 1x1 ``classifier`` conv, a mask-classification
    head's ``classifier`` Linear (``num_classes + 1`` outputs: "no object" last) and its criterion's
    class weights (``empty_weight``, the no-object weight kept)."""
    names = []
    for name, module in model.named_modules():
        cls = getattr(module, "classifier", None)
        where = f"{name}.classifier" if name else "classifier"
        if isinstance(cls, nn.Conv2d) and cls.out_channels != num_classes:
            module.classifier = nn.Conv2d(cls.in_channels, num_classes, kernel_size=1).to(cls.weight.device)
            names.append(where)
        elif isinstance(cls, nn.Linear) and cls.out_features != num_classes + 1:
            module.classifier = nn.Linear(cls.in_features, num_classes + 1).to(cls.weight.device)
            names.append(where)
        weight = getattr(module, "empty_weight", None)
        if isinstance(weight, torch.Tensor) and weight.numel() != num_classes + 1:
            new = torch.ones(num_classes + 1, dtype=weight.dtype, device=weight.device)
            new[-1] = weight[-1]
            module.empty_weight = new
            names.append(f"{name}.empty_weight" if name else "empty_weight")
    return names


def checkpoint_num_classes(sd: Mapping[str, torch.Tensor]) -> int | None:
    """The class count a segzoo-layout state dict was trained for (its decode head's classifier: a 1x1
    conv's outputs, or a mask-classification Linear's minus its "no object" one)."""
    w = sd.get("decode_head.classifier.weight")
    if w is not None and w.ndim == 4:
        return int(w.shape[0])
    if w is not None and w.ndim == 2:
        return int(w.shape[0]) - 1
    return None


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


def load_weights(model: nn.Module, sd: dict, fmt: str, source: str) -> None:
    """Strict load of a converted state dict; a "timm" one (an ImageNet classifier) fills the backbone only."""
    load_state_dict_strict(model, sd, prefix="backbone." if fmt == "timm" else "", source=source)


def _timm_state_dict(name: str) -> dict:
    """The state dict of timm's pretrained classifier ``name``, its file fetched by segzoo's hub (the
    timm Hub repo's ``model.safetensors`` then ``pytorch_model.bin``, then timm's original URL, with the
    same fallback, cache, ``HF_ENDPOINT`` / ``HF_HUB_OFFLINE`` handling and one clear error as every
    other segzoo download); timm's own checkpoint filter applies to the file."""
    import timm
    from timm.models import get_pretrained_cfg
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained weights named {name!r}")
    sources = []
    if cfg.hf_hub_id:
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        sources += [{"hf_hub_id": cfg.hf_hub_id, "filename": f} for f in files]
    if cfg.url:
        sources.append({"url": cfg.url, "filename": cfg.url.rsplit("/", 1)[-1]})
    path, _ = hub.fetch_weights(sources, label=f"ImageNet weights {name}")
    net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path), "source": ""})
    return net.state_dict()


def load_imagenet(backbone: nn.Module, cfg: Mapping[str, Any]) -> str:
    """Put the ImageNet weights of backbone config ``cfg`` into ``backbone`` (strictly); returns their
    description. The family file says where they are (``imagenet_weights(cfg)``: a timm name, or
    sources) and maps their keys (``convert_timm``, then ``adapt_imagenet(sd, backbone)`` if it has one)."""
    family = backbone_family(cfg["type"])
    where = family.imagenet_weights(dict(cfg))  # ValueError where none are known
    if "timm" in where:
        sd, desc = _timm_state_dict(where["timm"]), f"timm {where['timm']}"
    else:
        path, src = hub.fetch_weights(where["sources"], label=where.get("label", f"{cfg['type']} ImageNet weights"))
        sd, desc = read_state_dict(path), str(path)
    sd = family.convert_timm(sd)
    if hasattr(family, "adapt_imagenet"):
        sd = family.adapt_imagenet(sd, backbone)
    load_state_dict_strict(backbone, sd, source=f"ImageNet weights ({desc})")
    return desc


def build_and_load(arch: Mapping[str, Any], *, checkpoint=None, record=None, pretrained_backbone: bool = False):
    """(model, how it was initialised) for ``arch``: the weights of ``checkpoint`` (any ``checkpoint=``
    value; its own classifier size sets ``num_classes``), else the ``record``'s own (downloaded,
    converted and cached once), else random with ImageNet weights in the backbone when
    ``pretrained_backbone``. Every load is strict. The model carries segzoo's API (``with_api``)."""
    arch = copy.deepcopy(dict(arch))
    if checkpoint is not None:
        sd, fmt, src = hub.load_checkpoint(checkpoint, arch)
        own = checkpoint_num_classes(sd) if fmt != "timm" else None
        if own is not None:
            arch["num_classes"] = own
        model = build_model(arch)
        load_weights(model, sd, fmt, src)
        info = {"init": "checkpoint", "checkpoint": src, "format": fmt}
    elif record is not None:
        model = build_model(arch)
        _, fmt, src = hub.load_pretrained(record, arch, load=lambda sd, f, s: load_weights(model, sd, f, s))
        info = {"init": "pretrained", "checkpoint": src, "format": fmt}
    else:
        model = build_model(arch)
        info = {"init": "random", "pretrained_backbone": bool(pretrained_backbone)}
        if pretrained_backbone:
            info["backbone_weights"] = load_imagenet(model.backbone, arch["backbone"])
    return with_api(model), info


def create_model(name: str, pretrained: bool = False, *, num_classes: int | None = None, checkpoint=None,
                 pretrained_backbone: bool = False, device=None, class_names=None, **overrides: Any):
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
        model, info = build_and_load(arch, checkpoint=checkpoint, record=None if checkpoint is not None else record)
        if checkpoint is not None:
            saved = hub.saved_config(checkpoint)  # config.json beside a save_pretrained folder
            names = (saved or {}).get("class_names") or None
            if model.arch["num_classes"] != arch["num_classes"]:  # the checkpoint's own head (a fine-tuned model's)
                record = _adapt_record(record, model.arch["num_classes"], names)
            elif names and len(names) == arch["num_classes"]:
                record = _adapt_record(record, arch["num_classes"], names)
            info["previous"] = (saved or {}).get("provenance")
        arch = dict(model.arch)
        provenance.update(info)
        _log.info("%s: loaded %s weights from %s", record.name, info["format"], info["checkpoint"])
        if num_classes is not None and num_classes != arch["num_classes"]:
            reset = _reset_classifiers(model, num_classes)
            model.arch = dict(model.arch, num_classes=num_classes)
            provenance["new_classifier"] = {"num_classes": num_classes, "was": arch["num_classes"], "layers": reset}
            _log.warning("%s: num_classes=%d differs from the checkpoint's %d; re-initialised %s",
                         record.name, num_classes, arch["num_classes"], ", ".join(reset))
        if pretrained_backbone:
            _log.info("pretrained_backbone ignored: the full checkpoint already sets the backbone")
    else:
        if num_classes is not None:
            arch["num_classes"] = num_classes
        model, info = build_and_load(arch, pretrained_backbone=pretrained_backbone)
        provenance.update(info)
    model.record = _adapt_record(record, int(model.arch["num_classes"]), class_names)
    model.provenance = provenance
    if device is not None:
        model.to(torch.device(device))
    return model.eval()
