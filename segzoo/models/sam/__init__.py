"""Segment Anything (Meta's ViT-B/L/H encoders) and MobileSAM (TinyViT encoder): networks and the
converters of their checkpoint layouts. The promptable inference on top is ``segzoo.sam``'s."""
from .convert import convert_state_dict, convert_transformers, detect_format
from .prompt import MaskDecoder, PromptEncoder, TwoWayTransformer
from .sam import ENCODERS, Sam, build_sam, sam_arch
from .tiny_vit import TinyViTImageEncoder
from .vit import ViTImageEncoder

__all__ = ["Sam", "build_sam", "sam_arch", "ENCODERS", "ViTImageEncoder", "TinyViTImageEncoder", "PromptEncoder",
           "MaskDecoder", "TwoWayTransformer", "convert_state_dict", "convert_transformers", "detect_format"]
