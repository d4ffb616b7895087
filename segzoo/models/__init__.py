"""Networks: backbones, heads and the segmentor that joins them."""
from .segmentor import SEGMENTORS, Segmentor, build_model, count_parameters, register_segmentor
from . import ocrnet  # noqa: F401,E402  (registration)

__all__ = ["Segmentor", "SEGMENTORS", "register_segmentor", "build_model", "count_parameters"]
