"""transformers checkpoints (``*ForSemanticSegmentation``) -> segzoo keys.

A dispatcher only: each segmentor's head file registers how its checkpoint splits into backbone
and head keys (``segzoo.models.foreign.transformers_segmentor``); the backbone family's
``convert_transformers`` maps the backbone's.
"""
from __future__ import annotations

from ..models import backbone_family
from ..models.foreign import TRANSFORMERS_SEGMENTORS

__all__ = ["convert_state_dict"]


def convert_state_dict(sd: dict, arch: dict) -> dict:
    segmentor = arch["segmentor"]
    if segmentor not in TRANSFORMERS_SEGMENTORS:
        raise ValueError(f"no transformers checkpoint layout is known for segmentor {segmentor!r}; "
                         f"known: {', '.join(sorted(TRANSFORMERS_SEGMENTORS))}")
    backbone, rest = TRANSFORMERS_SEGMENTORS[segmentor](sd, arch)
    family = backbone_family(arch["backbone"]["type"])
    return {**{f"backbone.{k}": v for k, v in family.convert_transformers(backbone).items()}, **rest}
