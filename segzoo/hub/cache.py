"""The conversion cache: a record's weights in segzoo's layout, reconverted when the record, the arch
or the upstream file changes."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Mapping

from ..convert import to_segzoo
from ..convert.checkpoint import HUB_DEFAULT_FILES as _HUB_DEFAULT_FILES, _is_safetensors, read_state_dict
from ..errors import WeightsUnavailableError
from .download import _read_ledger
from .files import _atomic_save_safetensors, _atomic_write_bytes, _hf_cache_dir, _sha256_file, cache_root
from .sources import _source_desc, fetch_weights

_log = logging.getLogger("segzoo")


def _fingerprint(record, arch: Mapping) -> str:
    blob = json.dumps({"weights": [dict(w) for w in record.weights], "arch": arch}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _converted_dir(record) -> Path:
    return cache_root() / "converted" / record.name


def _file_sha256(path) -> str:
    """sha256 of a downloaded file. A Hugging Face cache blob of an LFS file is named by its sha256
    (the Hub's ETag), so that one is not read."""
    real = Path(os.path.realpath(path))
    name = real.name
    if real.parent.name == "blobs" and len(name) == 64 and all(c in "0123456789abcdef" for c in name):
        return name
    return _sha256_file(real)


def _served_sha256(src: Mapping, known: Mapping[str, str] | None = None) -> str | None:
    """sha256 of the file that ``src`` serves now, found without network: the record's sha256 (which
    downloads enforce), else for a release URL the ledger's (recorded on download, checked on every
    use), for a Hub file the Hugging Face cache's file for its revision, for a local path the file.
    None when it cannot be known without downloading. ``known``: {real path: sha256} already computed."""
    if src.get("sha256"):
        return str(src["sha256"]).lower()
    if "url" in src:
        return (_read_ledger().get(src["url"]) or {}).get("sha256")
    if "hf_hub_id" in src:
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(src["hf_hub_id"], src.get("filename") or _HUB_DEFAULT_FILES[0],
                                       cache_dir=_hf_cache_dir(), revision=src.get("revision"))
        return _file_sha256(found) if isinstance(found, str) and os.path.isfile(found) else None
    if "path" in src:
        path = Path(src["path"]).expanduser()
        if not path.is_file():
            return None
        return (known or {}).get(os.path.realpath(path)) or _sha256_file(path)
    return None


def _original_sha256(src: Mapping, path: Path) -> str:
    """sha256 of ``path``, the file that ``src`` just served."""
    if "url" in src:  # download_url verified it against the ledger entry it keeps
        ledger = (_read_ledger().get(src["url"]) or {}).get("sha256")
        if ledger:
            return ledger
    return _file_sha256(path)


def _converted_meta(record, arch: Mapping) -> dict | None:
    """meta.json of the record's cached conversion when it was made for this record and arch, from a
    known original, and its file is intact; else None."""
    folder = _converted_dir(record)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    path = Path(meta.get("file", ""))
    original = meta.get("original")
    if meta.get("fingerprint") != _fingerprint(record, arch) or not path.is_file() or not isinstance(original, dict) \
            or not original.get("sha256"):
        return None
    if _sha256_file(path) != meta.get("sha256"):
        _log.warning("%s: cached weights %s do not match their sha256; converting again", record.name, path)
        return None
    return meta


def _original_now(record, meta: Mapping) -> str | None:
    """sha256 of the file that the source a cached conversion came from serves now (see
    :func:`_served_sha256`); None when that cannot be known without downloading."""
    for src in record.weights:
        if _source_desc(src) == meta["original"]["source"]:
            return _served_sha256(src, known={os.path.realpath(meta["file"]): meta["sha256"]})
    return None


def _read_converted(record, arch: Mapping) -> tuple[tuple[dict, str, str] | None, dict | None]:
    """(cached, unverified). ``cached``: the record's cached conversion (state dict, format,
    description) when it is still valid: made for this record and arch, intact, and converted from
    the file its source serves now (found without network, see :func:`_served_sha256`).
    ``unverified``: the cache entry's meta when all holds but the last cannot be known without
    downloading; None otherwise."""
    meta = _converted_meta(record, arch)
    if meta is None:
        return None, None
    now = _original_now(record, meta)
    if now is None:
        return None, meta
    if now != meta["original"]["sha256"]:
        _log.info("%s: %s now serves another file (sha256 %s) than the one converted (sha256 %s); "
                  "converting again", record.name, meta["original"]["source"], now[:12], meta["original"]["sha256"][:12])
        return None, None
    return _load_converted(meta), None


def _load_converted(meta: Mapping) -> tuple[dict, str, str]:
    from safetensors.torch import load_file
    path = meta["file"]
    return load_file(str(path)), meta["format"], f"{path} (cached, from {meta['source']})"


def _write_converted(record, arch: Mapping, sd: dict, fmt: str, desc: str, original: Path,
                     original_sha256: str | None = None) -> None:
    """Cache ``sd`` (converted from the file ``original``, served by ``desc``) for the record; meta.json
    records the converted file's sha256 and the original's, so that a changed upstream file reconverts."""
    folder = _converted_dir(record)
    original_sha256 = original_sha256 or _file_sha256(original)
    if fmt == "segzoo" and _is_safetensors(original):
        target = Path(os.path.realpath(original))  # already in our layout: point at it, do not copy
    else:
        target = folder / "model.safetensors"
        _atomic_save_safetensors(sd, target, metadata={"format": "pt", "segzoo_source": desc, "segzoo_format": fmt})
        if (folder / "meta.json").exists():  # a previous conversion's meta now describes another file
            (folder / "meta.json").unlink()
    meta = {"file": str(target), "sha256": _sha256_file(target), "format": fmt, "source": desc,
            "original": {"source": desc, "sha256": original_sha256},
            "fingerprint": _fingerprint(record, arch), "record": record.name}
    _atomic_write_bytes(folder / "meta.json", json.dumps(meta, indent=1).encode())


def load_pretrained(record, arch: dict, *, load: Callable[[dict, str, str], None] | None = None,
                    use_cache: bool = True):
    """(segzoo state dict, original format, source description) for a record's own weights.

    The converted state dict is cached under ``converted/<record name>/``; a later call with the
    same record and arch reads it back without network or conversion, as long as the file its source
    serves is still the one it was converted from (the ledger's sha256 for release URLs, the
    Hugging Face cache's file for Hub files). Where that cannot be known without downloading (the
    ledger entry removed to accept a changed upstream file, the Hub file gone from the cache), the
    file is fetched, and converted again only if it changed; if it cannot be fetched, the cached
    conversion is used with a warning. ``load(sd, fmt, src)``, when given, puts the weights into the
    model (strictly); the conversion is cached only once that succeeded, and a cached conversion that
    no longer loads is converted again from the original.
    """
    def use(cached):
        try:
            if load is not None:
                load(*cached)
            return cached
        except RuntimeError as exc:
            _log.warning("%s: cached conversion does not load (%s); converting again", record.name,
                         str(exc).splitlines()[0])
            return None

    cached, unverified = _read_converted(record, arch) if use_cache else (None, None)
    if cached is not None and use(cached) is not None:
        return cached
    try:
        path, src = fetch_weights(record.weights, label=record.name)
    except WeightsUnavailableError as exc:
        if unverified is None:
            raise
        _log.warning("%s: cannot check that the cached conversion is still that of the file its source serves "
                     "(%s); using it", record.name, str(exc).splitlines()[0])
        cached = _load_converted(unverified)
        if load is not None:
            load(*cached)
        return cached
    desc = _source_desc(src)
    original_sha256 = _original_sha256(src, path)
    if unverified is not None and unverified["original"] == {"source": desc, "sha256": original_sha256}:
        cached = use(_load_converted(unverified))  # the same file as before: no need to convert it again
        if cached is not None:
            return cached
    sd, fmt = to_segzoo(read_state_dict(path), arch, src.get("format"))
    if load is not None:
        load(sd, fmt, desc)
    if use_cache:
        try:
            _write_converted(record, arch, sd, fmt, desc, path, original_sha256)
        except OSError as exc:  # a read-only cache costs a conversion next time, nothing more
            _log.warning("%s: could not cache the converted weights: %s", record.name, exc)
    return sd, fmt, desc
