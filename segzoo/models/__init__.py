"""Networks: backbones, heads and the segmentor that joins them."""
from .segmentor import Segmentor, build_model, count_parameters

__all__ = ["Segmentor", "build_model", "count_parameters"]
