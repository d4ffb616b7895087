"""Weight sources: local files, URLs, the Hugging Face Hub; cache; checksums; formats."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .convert import to_segzoo


def read_state_dict(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return sd


def load_checkpoint(checkpoint, arch: dict, fmt: str | None = None):
    """(segzoo state dict, detected format, description of the source)."""
    if isinstance(checkpoint, dict):
        sd, fmt = to_segzoo(checkpoint, arch, fmt)
        return sd, fmt, "state dict"
    src = os.fspath(checkpoint)
    sd, fmt = to_segzoo(read_state_dict(src), arch, fmt)
    return sd, fmt, src
