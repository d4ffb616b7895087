"""Networks: backbones, heads and the segmentors that join them, each family with its foreign
key rules and SSSegmentation translation (see ``foreign``)."""
from .backbones import backbone_family
from .segmentor import SEGMENTORS, Segmentor, build_model, count_parameters, register_segmentor
from . import segmentors  # noqa: F401,E402  (registration)

__all__ = ["Segmentor", "SEGMENTORS", "register_segmentor", "build_model", "count_parameters", "backbone_family"]
