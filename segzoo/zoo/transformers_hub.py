"""Records for transformers-format checkpoints on the Hugging Face Hub (UperNet, Segformer).

Filled in by the Swin/ConvNeXt and MiT ports; ``HUB_NAMES`` lets the SSSegmentation table
avoid names these records own.
"""
from __future__ import annotations

from ..registry import ModelRecord, register

RECORDS: list[ModelRecord] = []
HUB_NAMES = {r.name for r in RECORDS}
for _r in RECORDS:
    register(_r)
