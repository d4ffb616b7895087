"""segzoo: semantic-segmentation models of the SSSegmentation zoo and the Hub, one call away.

>>> import segzoo
>>> segzoo.list_models("upernet_*", dataset="ade20k")[:2]
>>> model = segzoo.create_model("upernet_swin_base_ade20k", pretrained=True)
>>> labels = model.predict("street.jpg", mode="slide")

``import segzoo`` and ``list_models`` do not import torch.
"""
from __future__ import annotations

from .registry import ModelRecord, UnknownModelError, list_models, model_info

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "model_info", "ModelRecord", "UnknownModelError", "__version__"]


def create_model(name: str, pretrained: bool = False, *, num_classes: int | None = None, checkpoint=None,
                 pretrained_backbone: bool = False, device=None, **overrides):
    """Build model ``name`` (a registered name or ``hf-hub:org/repo``); see DESIGN.md for the contract."""
    from ._factory import create_model as _create
    return _create(name, pretrained=pretrained, num_classes=num_classes, checkpoint=checkpoint,
                   pretrained_backbone=pretrained_backbone, device=device, **overrides)
