"""Segmentor: backbone + decode head + auxiliary heads (networks only; the user-facing methods are
``segzoo.api``'s)."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from .backbones import build_backbone
from .heads import build_head
from ._registry import registrar
from .layers import resize

__all__ = ["Segmentor", "SEGMENTORS", "register_segmentor", "build_model", "count_parameters"]

# arch["segmentor"] -> class, for segmentors whose forward is not the generic one (see build_model)
SEGMENTORS: dict[str, type] = {}


# class decorator: build_model builds arch["segmentor"] == name with the decorated class
register_segmentor = registrar(SEGMENTORS)


class Segmentor(nn.Module):
    """``forward(x)`` returns class logits (N, C, h, w) in eval mode; in train mode a dict with
    ``logits`` and ``aux_logits`` (list), all at head resolution, which the losses upsample.

    Segmentors whose heads compose differently subclass it, override ``forward`` and register
    with :func:`register_segmentor`."""

    #: whether inference runs the auxiliary heads (True where the decode head reads their output)
    aux_heads_in_inference: bool = False
    #: train-mode output key -> the name of the loss (in the reference config's ``losses``) that
    #: supervises it, None for data a loss reads (PointRend's ``points``); a list output's losses are
    #: numbered as SSSegmentation numbers them (see :meth:`losses_of`). A segmentor with other
    #: outputs declares its own; the training code reads this.
    LOSSES: dict = {"logits": "loss_cls", "aux_logits": "loss_aux"}

    def __init__(self, backbone: nn.Module, decode_head: nn.Module, aux_heads=(), align_corners: bool = False):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.aux_heads = nn.ModuleList(aux_heads)
        self.align_corners = align_corners
        self.record = None          # ModelRecord, set by create_model
        self.arch: dict = {}

    def losses_of(self, outputs: Mapping[str, Any]) -> dict:
        """{loss name: the train-mode output it supervises} for ``outputs = model(x)`` in train mode.
        A list output (``aux_logits``) supervises ``name`` when it holds one tensor, ``name1``,
        ``name2``, ... when it holds several."""
        found = {}
        for key, name in self.LOSSES.items():
            if name is None or key not in outputs:
                continue
            value = outputs[key]
            if isinstance(value, (list, tuple)):
                found.update({name: value[0]} if len(value) == 1 else
                             {f"{name}{i + 1}": v for i, v in enumerate(value)})
            else:
                found[name] = value
        return found

    @property
    def num_classes(self) -> int:
        return self.decode_head.classifier.out_channels

    @property
    def min_input_size(self) -> int:
        """The smallest image side the network accepts (inference pads smaller images up to it): the
        backbone's, or more where the decode head needs maps of ``min_feature_size`` cells."""
        size = int(getattr(self.backbone, "min_input_size", 1))
        cells = int(getattr(self.decode_head, "min_feature_size", 1))
        reductions = getattr(self.backbone, "reductions", None)
        index = getattr(self.decode_head, "in_index", -1)
        if cells > 1 and reductions and isinstance(index, int):
            size = max(size, cells * int(reductions[index]))
        return size

    @property
    def frozen_inference_pays(self) -> bool:
        """Whether slide inference on the CPU should run a traced, frozen copy of this network."""
        return bool(getattr(self.backbone, "frozen_inference_pays", False))

    def forward(self, x: torch.Tensor):
        feats = self.backbone(x)
        logits = self.decode_head(feats)
        if not self.training:
            return logits
        return {"logits": logits, "aux_logits": [h(feats) for h in self.aux_heads]}

    def forward_upsampled(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits resized to the input's spatial size."""
        return resize(self(x), x.shape[-2:], self.align_corners)


def build_model(arch: Mapping[str, Any], num_classes: int | None = None) -> Segmentor:
    """Build a randomly initialised :class:`Segmentor` (or the class registered for
    ``arch["segmentor"]``) from an ``arch`` mapping (see ModelRecord.arch). Weights, ImageNet ones
    included, are put in by ``segzoo._factory.build_and_load``."""
    cls = SEGMENTORS.get(arch.get("segmentor"))
    if cls is not None and hasattr(cls, "from_arch"):  # a network of another shape (SAM) builds itself
        return cls.from_arch(arch)
    num_classes = int(num_classes if num_classes is not None else arch["num_classes"])
    align_corners = bool(arch.get("align_corners", False))
    backbone = build_backbone(arch["backbone"])
    chans = backbone.out_channels
    head = build_head(arch["decode_head"], chans, num_classes, align_corners)
    aux = [build_head(cfg, chans, num_classes, align_corners) for cfg in arch.get("aux_heads", ())]
    model = SEGMENTORS.get(arch.get("segmentor"), Segmentor)(backbone, head, aux, align_corners)
    model.arch = dict(arch, num_classes=num_classes)
    return model


_PARAMS: dict[str, int] = {}


def count_parameters(arch: Mapping[str, Any], *, inference_only: bool = True) -> int:
    """Parameters of the network ``arch`` describes, counted on the meta device (nothing is
    allocated); ``inference_only`` leaves out the training-only auxiliary heads (those that the
    segmentor runs at inference too, OCRNet's soft-region head, count)."""
    import json
    if inference_only and not SEGMENTORS.get(arch.get("segmentor"), Segmentor).aux_heads_in_inference:
        arch = dict(arch, aux_heads=[])
    key = json.dumps(arch, sort_keys=True, default=list)
    if key not in _PARAMS:
        with torch.device("meta"):
            _PARAMS[key] = sum(p.numel() for p in build_model(arch).parameters())
    return _PARAMS[key]
