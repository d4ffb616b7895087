"""transformers checkpoints (UperNetForSemanticSegmentation, SegformerForSemanticSegmentation) -> segzoo keys.

Accepts both the Hub files' key names and those of the installed transformers' ``state_dict()``
(transformers 5 renames some on load, e.g. ``decode_head.linear_c`` -> ``linear_projections``).
Backbone keys go to ``segzoo.models.backbones.<type>.convert_transformers``.
"""
from __future__ import annotations

import importlib
import re

from ..models.backbones.mit import segformer_encoder

__all__ = ["convert_state_dict", "segformer_encoder"]

_UPER_RULES = [
    (r"^decode_head\.psp_modules\.(\d+)\.1\.", r"decode_head.ppm.stages.\1."),
    (r"^decode_head\.bottleneck\.", "decode_head.ppm.bottleneck."),
    (r"^auxiliary_head\.", "aux_heads.0."),
]


def _cna_names(key: str) -> str:
    return key.replace(".batch_norm.", ".bn.")


def convert_state_dict(sd: dict, arch: dict) -> dict:
    segmentor = arch["segmentor"]
    bb_prefix = "segformer." if segmentor == "segformer" else "backbone."
    bb_mod = importlib.import_module(f"segzoo.models.backbones.{arch['backbone']['type']}")
    if segmentor == "segformer":
        backbone = segformer_encoder(sd)
    else:
        backbone = {k[len(bb_prefix):]: v for k, v in sd.items() if k.startswith(bb_prefix)}
    out = {f"backbone.{k}": v for k, v in bb_mod.convert_transformers(backbone).items()}
    n_levels = len(arch["decode_head"].get("in_index", [0, 1, 2, 3]))
    for key, value in sd.items():
        if key.startswith(bb_prefix):
            continue
        new = key
        if segmentor == "upernet":
            for pattern, repl in _UPER_RULES:
                new = re.sub(pattern, repl, new)
            new = _cna_names(new)
        elif segmentor == "segformer":
            m = re.match(r"^decode_head\.(?:linear_c|linear_projections)\.(\d+)\.proj\.(weight|bias)$", key)
            if m:
                new = f"decode_head.proj.{m.group(1)}.conv.{m.group(2)}"
                if m.group(2) == "weight":
                    value = value[:, :, None, None]
            elif key == "decode_head.linear_fuse.weight":
                # transformers concatenates the levels deepest first; segzoo finest first
                new = "decode_head.fuse.conv.weight"
                value = value.reshape(value.shape[0], n_levels, -1, *value.shape[2:]).flip(1).reshape(value.shape)
            elif key.startswith("decode_head.batch_norm."):
                new = "decode_head.fuse.bn." + key[len("decode_head.batch_norm."):]
        out[new] = value
    return out
