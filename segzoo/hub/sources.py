"""A record's weight sources tried in order, and what a ``checkpoint=`` argument points at."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Mapping

from ..convert import to_segzoo
from ..convert.checkpoint import HUB_DEFAULT_FILES as _HUB_DEFAULT_FILES, read_state_dict
from ..errors import WeightsUnavailableError
from .download import download_url
from .hf import _hub_desc, _parse_hf_spec, hub_download

_log = logging.getLogger("segzoo")


def _source_desc(src: Mapping) -> str:
    if "hf_hub_id" in src:
        return _hub_desc(src["hf_hub_id"], src.get("filename") or _HUB_DEFAULT_FILES[0], src.get("revision"))
    if "url" in src:
        return src["url"]
    if "path" in src:
        return str(src["path"])
    raise ValueError(f"weights entry {dict(src)} has none of hf_hub_id, url, path")


def _fetch_source(src: Mapping) -> Path:
    if "hf_hub_id" in src:
        return hub_download(src["hf_hub_id"], src.get("filename") or _HUB_DEFAULT_FILES[0],
                            revision=src.get("revision"), sha256=src.get("sha256"))
    if "url" in src:
        return download_url(src["url"], filename=src.get("filename"), sha256=src.get("sha256"))
    if "path" in src:
        path = Path(src["path"]).expanduser()
        if not path.exists():
            raise WeightsUnavailableError(f"{path}: no such file")
        return path
    raise ValueError(f"weights entry {dict(src)} has none of hf_hub_id, url, path")


def fetch_weights(sources: Iterable[Mapping], *, label: str = "checkpoint") -> tuple[Path, dict]:
    """The first source of ``sources`` that serves its file: (local path, source entry).

    A source that is gone (HTTP 404, DNS failure, refused connection, timeout, offline and not
    cached) is passed over for the next one; when a later source serves, each one passed over is
    logged as a warning with why; when none serves, nothing is logged and one
    :class:`WeightsUnavailableError` names each source and why. A checksum mismatch is raised at
    once: a file that is not what the record says is an alarm, not a reason to look elsewhere.
    """
    sources = [dict(s) for s in sources]
    if not sources:
        raise WeightsUnavailableError(f"{label} has no weights to download")
    failures = []
    for i, src in enumerate(sources):
        desc = _source_desc(src)
        try:
            path = _fetch_source(src)
        except WeightsUnavailableError as exc:
            failures.append(str(exc))
            continue
        if failures:
            for failure in failures:
                _log.warning("%s: %s; trying the next source", label, failure)
            _log.info("%s: weights served by %s (source %d of %d)", label, desc, i + 1, len(sources))
        else:
            _log.info("%s: weights served by %s", label, desc)
        return path, src
    raise WeightsUnavailableError(
        f"no weights for {label}: "
        f"{'its one source could not' if len(failures) == 1 else f'none of its {len(failures)} sources could'} "
        "serve them; connect to the network (or set HF_ENDPOINT to a reachable Hub mirror), download the "
        "file into the cache beforehand, or pass checkpoint=<local file>. Tried:\n"
        + "\n".join(f"  - {f}" for f in failures))


# ---- checkpoints ---------------------------------------------------------------------------------
def _resolve_checkpoint(checkpoint: str) -> tuple[Path, str]:
    """Local path and description of a ``checkpoint=`` argument (path, URL, hf-hub:, local-dir:)."""
    if checkpoint.startswith("hf-hub:"):
        repo, revision, filename = _parse_hf_spec(checkpoint)
        if filename:
            return hub_download(repo, filename, revision=revision), _hub_desc(repo, filename, revision)
        path, src = fetch_weights([{"hf_hub_id": repo, "filename": f, "revision": revision} for f in _HUB_DEFAULT_FILES],
                                  label=checkpoint)
        return path, _source_desc(src)
    if checkpoint.startswith(("http://", "https://")):
        return download_url(checkpoint), checkpoint
    if checkpoint.startswith("local-dir:"):
        checkpoint = checkpoint[len("local-dir:"):]
    return Path(checkpoint).expanduser(), checkpoint


def saved_config(checkpoint) -> dict | None:
    """The ``config.json`` that ``save_pretrained`` wrote beside a local checkpoint (the folder itself,
    ``local-dir:`` or a file inside it), or None."""
    if isinstance(checkpoint, Mapping):
        return None
    spec = os.fspath(checkpoint)
    if spec.startswith(("hf-hub:", "http://", "https://")):
        return None
    path = Path(spec[len("local-dir:"):] if spec.startswith("local-dir:") else spec).expanduser()
    cfg_path = path / "config.json" if path.is_dir() else path.with_name("config.json")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return cfg if isinstance(cfg, dict) and isinstance(cfg.get("arch"), dict) else None


def load_checkpoint(checkpoint, arch: dict, fmt: str | None = None):
    """(segzoo state dict, detected format, description of the source) for a ``checkpoint=`` value:
    a state dict, a local file or folder, an http(s) URL, ``hf-hub:org/repo[/file]`` or ``local-dir:``."""
    if isinstance(checkpoint, dict):
        sd, fmt = to_segzoo(checkpoint, arch, fmt)
        return sd, fmt, "state dict"
    path, desc = _resolve_checkpoint(os.fspath(checkpoint))
    sd, fmt = to_segzoo(read_state_dict(path), arch, fmt)
    return sd, fmt, desc
