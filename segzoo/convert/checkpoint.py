"""Reading checkpoint files (safetensors or torch) and loading them strictly."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointMismatchError

__all__ = ["read_state_dict", "load_state_dict_strict", "HUB_DEFAULT_FILES"]

HUB_DEFAULT_FILES = ("model.safetensors", "pytorch_model.bin")  # what a checkpoint folder holds


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK")


def read_state_dict(path) -> dict:
    """A state dict from a ``.safetensors`` file or a torch checkpoint (``weights_only=True``);
    a directory stands for the ``model.safetensors`` (or ``pytorch_model.bin``) inside it."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in HUB_DEFAULT_FILES:
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"checkpoint folder {path} has no {' or '.join(HUB_DEFAULT_FILES)}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if _is_safetensors(path):
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickles with code, truncated or foreign files
        raise ValueError(f"cannot read checkpoint {path} with torch.load(weights_only=True): "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"checkpoint {path} holds a {type(sd).__name__}, not a state dict")
    return sd


def load_state_dict_strict(model: nn.Module, sd: dict, *, prefix: str = "", source: str = "checkpoint") -> None:
    """Load ``sd`` into ``model`` (or its ``prefix`` submodule); every key must be used and every
    parameter and buffer provided, with matching shapes, else the error lists the offenders."""
    target = model.get_submodule(prefix.rstrip(".")) if prefix else model
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)} if prefix else sd
    own = target.state_dict()
    unused = sorted(set(sd) - set(own))
    missing = sorted(set(own) - set(sd))
    shapes = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(sd) & set(own) if tuple(sd[k].shape) != tuple(own[k].shape))
    if unused or missing or shapes:
        def fmt(label, items):
            if not items:
                return ""
            more = f" (+{len(items) - 20} more)" if len(items) > 20 else ""
            return f"\n  {label} ({len(items)}): {', '.join(items[:20])}{more}"
        raise CheckpointMismatchError(f"{source} does not match the model" + fmt("unused keys", unused)
                                      + fmt("missing keys", missing) + fmt("shape mismatches", shapes))
    target.load_state_dict(sd, strict=True)
