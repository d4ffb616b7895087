"""Segmentor: backbone + decode head + auxiliary heads, and the user-facing model methods."""
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

    def __init__(self, backbone: nn.Module, decode_head: nn.Module, aux_heads=(), align_corners: bool = False):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.aux_heads = nn.ModuleList(aux_heads)
        self.align_corners = align_corners
        self.record = None          # ModelRecord, set by create_model
        self.arch: dict = {}

    @property
    def recipe(self) -> dict:
        """The training recipe of the checkpoint this model was created from (empty if none)."""
        import copy
        return copy.deepcopy(dict(self.record.recipe)) if self.record is not None else {}

    @property
    def num_classes(self) -> int:
        return self.decode_head.classifier.out_channels

    @property
    def min_input_size(self) -> int:
        """The smallest image side the network accepts (inference pads smaller images up to it)."""
        return int(getattr(self.backbone, "min_input_size", 1))

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

    # --- user-facing methods, implemented in their own modules ---------------------------------
    def predict(self, image, *, mode: str | None = None, crop_size=None, stride=None, scales=None,
                flip: bool | None = None, output: str = "labels", batch_size: int | None = None, device=None,
                score_device=None, resize=None, optimize: bool | None = None):
        """Segment ``image``: a path, PIL image, HxWx3 uint8 numpy array (float arrays: 0..255), or a
        list of those. Returns, at the input's size, an HxW int64 array of class ids
        (``output="labels"``), CxHxW float32 probabilities (``"probs"``) or logits (``"logits"``);
        a list for a list input.

        Unset arguments follow the model's record (its test protocol): ``mode`` ("whole" or
        "slide"), ``crop_size`` and ``stride`` of the slide windows (int or (h, w)), ``scales``
        (multi-scale), ``flip``, ``resize`` (the test-time resize; False skips it) and the
        normalisation. ``batch_size``: slide windows per forward pass; ``device``: move the model
        first; ``score_device``: where the full-size score buffer lives; ``optimize``: the CPU
        fast path for slide windows (None: where it pays). See ``segzoo.inference.predict``."""
        from ..inference import predict
        return predict(self, image, mode=mode, crop_size=crop_size, stride=stride, scales=scales, flip=flip,
                       output=output, batch_size=batch_size, device=device, score_device=score_device,
                       resize=resize, optimize=optimize)

    def save_pretrained(self, save_directory, **kwargs):
        from ..hub import save_pretrained
        return save_pretrained(self, save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs):
        from ..hub import push_to_hub
        return push_to_hub(self, repo_id, **kwargs)


def build_model(arch: Mapping[str, Any], num_classes: int | None = None, pretrained_backbone: bool = False) -> Segmentor:
    """Build a randomly initialised :class:`Segmentor` (or the class registered for
    ``arch["segmentor"]``) from an ``arch`` mapping (see ModelRecord.arch)."""
    num_classes = int(num_classes if num_classes is not None else arch["num_classes"])
    align_corners = bool(arch.get("align_corners", False))
    backbone = build_backbone(arch["backbone"], pretrained=pretrained_backbone)
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
