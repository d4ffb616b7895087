"""Segmentor: backbone + decode head + auxiliary heads, and the user-facing model methods."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from .backbones import build_backbone
from .heads import build_head
from .layers import resize

__all__ = ["Segmentor", "build_model"]


class Segmentor(nn.Module):
    """``forward(x)`` returns class logits (N, C, h, w) in eval mode; in train mode a dict with
    ``logits`` and ``aux_logits`` (list), all at head resolution, which the losses upsample."""

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
    def predict(self, image, **kwargs):
        from ..inference import predict
        return predict(self, image, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        from ..hub import save_pretrained
        return save_pretrained(self, save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs):
        from ..hub import push_to_hub
        return push_to_hub(self, repo_id, **kwargs)


def build_model(arch: Mapping[str, Any], num_classes: int | None = None, pretrained_backbone: bool = False) -> Segmentor:
    """Build a randomly initialised :class:`Segmentor` from an ``arch`` mapping (see ModelRecord.arch)."""
    num_classes = int(num_classes if num_classes is not None else arch["num_classes"])
    align_corners = bool(arch.get("align_corners", False))
    backbone = build_backbone(arch["backbone"], pretrained=pretrained_backbone)
    chans = backbone.out_channels
    head = build_head(arch["decode_head"], chans, num_classes, align_corners)
    aux = [build_head(cfg, chans, num_classes, align_corners) for cfg in arch.get("aux_heads", ())]
    model = Segmentor(backbone, head, aux, align_corners)
    model.arch = dict(arch, num_classes=num_classes)
    return model
