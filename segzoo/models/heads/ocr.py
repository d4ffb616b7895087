"""OCR head (object-contextual representations, OCRNet): pixel features, object-region
representations gathered from them by soft object regions, and an object-context attention
block that augments each pixel with the regions it attends to; then the classifier.

The soft object regions (N, K, h, w) come from outside the head (OCRNet's auxiliary FCN head,
see ``segzoo.models.segmentors.ocrnet``), so ``forward`` takes ``(feats, soft_regions)``. ``in_index`` /
``in_channels`` say which backbone map carries the pixel features (ResNet's last stage; HRNet's
concatenated branches).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct, SelfAttention
from ..foreign import UnsupportedConfig, check_options, cna_rules, head_options, ssseg_segmentor
from .base import DecodeHead, register_head

__all__ = ["spatial_gather", "ObjectContextBlock", "OCRHead"]


def spatial_gather(feats: torch.Tensor, soft_regions: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Object-region representations (N, C, K, 1): the pixel features ``feats`` (N, C, h, w)
    averaged over each of the K soft regions (N, K, h, w), weighted by the softmax over the
    pixels of ``scale * soft_regions``."""
    weights = (scale * soft_regions.flatten(2)).softmax(dim=2)          # (n, k, hw)
    regions = torch.matmul(weights, feats.flatten(2).transpose(1, 2))   # (n, k, c)
    return regions.transpose(1, 2).unsqueeze(3)


class ObjectContextBlock(nn.Module):
    """Each pixel attends to the object-region representations (two-conv query/key projections,
    one-conv value/out projections, all with norm); the context is concatenated with the pixel
    features and fused by a 3x3 ConvNormAct."""

    def __init__(self, channels: int, transform_channels: int):
        super().__init__()
        self.attention = SelfAttention(channels, channels, transform_channels, channels, key_query_num_convs=2,
                                       value_out_num_convs=1, matmul_norm=True, with_out_project=True)
        self.bottleneck = ConvNormAct(channels * 2, channels, 3)

    def forward(self, pixels: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        context = self.attention(pixels, regions)
        return self.bottleneck(torch.cat([context, pixels], dim=1))


@register_head("ocr")
class OCRHead(DecodeHead):
    """``scale``: the sharpness of the soft regions' softmax in the spatial gather."""

    def __init__(self, in_channels, num_classes, channels=512, transform_channels=256, scale=1.0, in_index=-1,
                 dropout=0.0, align_corners=False):
        super().__init__(in_channels, channels, num_classes, in_index, dropout, align_corners)
        self.scale = scale
        self.bottleneck = ConvNormAct(self.in_channels, channels, 3)
        self.object_context = ObjectContextBlock(channels, transform_channels)

    def forward(self, feats, soft_regions: torch.Tensor) -> torch.Tensor:
        pixels = self.bottleneck(self.select(feats))
        regions = spatial_gather(pixels, soft_regions, self.scale)
        return self.classify(self.object_context(pixels, regions))


# ---- SSSegmentation (OCRNet) ------------------------------------------------------------------------
def _attention_project(src: str, dst: str, num_convs: int) -> list[tuple[str, str]]:
    """SSSegmentation's ``SelfAttentionBlock.buildproject`` (with norm): one conv is a flat
    Sequential(conv, norm, act), several a Sequential of them -> ``SelfAttention`` projection at ``dst``."""
    if num_convs == 1:
        return cna_rules(src, f"{dst}.0")
    return cna_rules(rf"{src}\.(\d+)", rf"{dst}.\1")


_OCB, _ATT = r"object_context_block", "decode_head.object_context.attention"
_OCR_OPTIONS = {"in_channels", "feats_channels", "transform_channels", "scale", "dropout"}


@ssseg_segmentor("OCRNet", "ocrnet", [
    *cna_rules(r"bottleneck", "decode_head.bottleneck"),
    *_attention_project(rf"{_OCB}\.key_project", f"{_ATT}.key_project", 2),
    *_attention_project(rf"{_OCB}\.query_project", f"{_ATT}.query_project", 2),
    *_attention_project(rf"{_OCB}\.value_project", f"{_ATT}.value_project", 1),
    *_attention_project(rf"{_OCB}\.out_project", f"{_ATT}.out_project", 1),
    *cna_rules(rf"{_OCB}\.bottleneck", "decode_head.object_context.bottleneck"),
    (r"^decoder\.1\.", "decode_head.classifier.")])
def from_ssseg(cfg: dict, sel: list) -> dict:
    head = cfg["head"]
    check_options(head, _OCR_OPTIONS, "OCRNet head")
    if head.get("scale", 1) != 1:  # ssseg then max-pools the attention's queries
        raise UnsupportedConfig(f"OCRNet with scale={head['scale']!r} is not ported (only 1)")
    if not isinstance(cfg.get("auxiliary"), dict):  # ssseg asserts one auxiliary head: the soft regions
        raise UnsupportedConfig("OCRNet without exactly one auxiliary head (its soft object regions) is not ported")
    return {"type": "ocr", "in_index": sel[-1], "transform_channels": int(head["transform_channels"]), "scale": 1,
            **head_options(cfg)}
