"""Decode-head base class and registry.

A head takes the backbone's list of feature maps and the list of their channel
counts; ``in_index`` says which maps it reads. Every head ends in ``dropout`` and a
1x1 ``classifier`` conv, which is what ``num_classes=`` re-initialises.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .._registry import registrar

__all__ = ["DecodeHead", "HEADS", "register_head", "build_head"]

HEADS: dict[str, type] = {}


register_head = registrar(HEADS)  # @register_head("fcn") on a DecodeHead class


def build_head(cfg: dict, in_channels: Sequence[int], num_classes: int, align_corners: bool = False) -> nn.Module:
    cfg = dict(cfg)
    kind = cfg.pop("type")
    if kind not in HEADS:
        raise ValueError(f"unknown head type {kind!r}; known: {', '.join(sorted(HEADS))}")
    return HEADS[kind](in_channels=list(in_channels), num_classes=num_classes, align_corners=align_corners, **cfg)


class DecodeHead(nn.Module):
    #: the smallest feature map side (in cells) the head accepts; the segmentor's ``min_input_size``
    #: turns it into pixels
    min_feature_size: int = 1

    def __init__(self, in_channels: Sequence[int], channels: int, num_classes: int, in_index,
                 dropout: float = 0.1, align_corners: bool = False):
        super().__init__()
        self.in_index = in_index
        self.channels = channels
        self.align_corners = align_corners
        if isinstance(in_index, int):
            self.in_channels = in_channels[in_index]
        else:
            self.in_channels = [in_channels[i] for i in in_index]
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def select(self, feats: Sequence[torch.Tensor]):
        if isinstance(self.in_index, int):
            return feats[self.in_index]
        return [feats[i] for i in self.in_index]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(x))
