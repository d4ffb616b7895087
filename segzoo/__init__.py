"""segzoo: semantic-segmentation models of the SSSegmentation zoo and the Hub, one call away.

>>> import segzoo
>>> segzoo.list_models("upernet_*", dataset="ade20k")[:2]
>>> model = segzoo.create_model("upernet_swin_base_ade20k", pretrained=True)
>>> labels = model.predict("street.jpg", mode="slide")

``import segzoo`` and ``list_models`` do not import torch.
"""
from __future__ import annotations

from .errors import (CheckpointMismatchError, ChecksumMismatchError, InvalidImageError, UnknownModelError,
                     WeightsUnavailableError)
from .registry import ModelRecord, list_models, model_info

from ._version import __version__
__all__ = ["create_model", "list_models", "model_info", "ModelRecord", "UnknownModelError", "InvalidImageError",
           "WeightsUnavailableError", "ChecksumMismatchError", "CheckpointMismatchError", "__version__"]


def create_model(name: str, pretrained: bool = False, *, num_classes: int | None = None, checkpoint=None,
                 pretrained_backbone: bool = False, device=None, class_names=None, **overrides):
    """Build model ``name`` and return it in eval mode.

    ``name``: a registered name, an alias of one (its Hub repo id such as
    ``openmmlab/upernet-swin-base``, or its SSSegmentation config name), ``hf-hub:org/repo`` or
    ``local-dir:/path`` (a folder written by ``save_pretrained``).
    ``pretrained``: load the record's weights (downloaded, converted and cached once).
    ``checkpoint``: a local file or folder, URL, ``hf-hub:org/repo[/file]`` or state dict instead;
    its format is detected and its own class count builds the head (a fine-tuned model loads under
    the name it was fine-tuned from). Loading is strict.
    ``num_classes``: a new classifier of that size (re-initialised; the rest keeps the weights);
    ``class_names`` names its classes. ``pretrained_backbone``: ImageNet weights in the backbone
    only. ``device``: move the model there. ``overrides``: ``arch`` keys, e.g. ``backbone={"depth": 18}``.
    """
    from ._factory import create_model as _create
    return _create(name, pretrained=pretrained, num_classes=num_classes, checkpoint=checkpoint,
                   pretrained_backbone=pretrained_backbone, device=device, class_names=class_names, **overrides)
