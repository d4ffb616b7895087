"""The cache folder, the environment that steers downloads, and files written atomically."""
from __future__ import annotations

import hashlib
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Mapping

import torch

_CHUNK = 1 << 20


# ---- environment ---------------------------------------------------------------------------------
def cache_root() -> Path:
    return Path(os.path.expanduser(os.environ.get("SEGZOO_CACHE") or "~/.cache/segzoo"))


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _offline() -> bool:
    """HF_HUB_OFFLINE, read now (so a value set after ``import huggingface_hub`` counts too)."""
    if _is_true(os.environ.get("HF_HUB_OFFLINE")) or _is_true(os.environ.get("TRANSFORMERS_OFFLINE")):
        return True
    hh = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(hh, "HF_HUB_OFFLINE", False))


def _hf_endpoint() -> str | None:
    ep = os.environ.get("HF_ENDPOINT")
    return ep.rstrip("/") if ep else None


def _hf_cache_dir() -> str | None:
    """The Hugging Face cache as the environment says now; None leaves huggingface_hub's default."""
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return os.path.expandvars(os.path.expanduser(env[var]))
    if env.get("HF_HOME"):
        return os.path.join(os.path.expandvars(os.path.expanduser(env["HF_HOME"])), "hub")
    return None


def _timeout() -> float:
    return float(os.environ.get("SEGZOO_DOWNLOAD_TIMEOUT") or 30)


# ---- small file helpers --------------------------------------------------------------------------
def _sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_save_safetensors(sd: Mapping[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        # clone: tensors that share storage (views, tied weights) cannot be written as they are
        save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale_parts(folder: Path, max_age_s: float = 3600.0) -> None:
    """Drop ``.part`` files a killed download left behind (never read; removed once they are old)."""
    if not folder.is_dir():
        return
    now = time.time()
    for p in folder.glob(".*.part"):
        try:
            if now - p.stat().st_mtime > max_age_s:
                p.unlink()
        except OSError:
            pass
