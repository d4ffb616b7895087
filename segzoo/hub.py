"""Weight sources (local files, release URLs, the Hugging Face Hub), the download and conversion
cache, checksums, and the ``save_pretrained`` / ``push_to_hub`` / ``segzoo convert`` round trip.

Cache layout (root: ``$SEGZOO_CACHE``, default ``~/.cache/segzoo``)::

    downloads/<url hash>/<filename>     release-URL files, renamed into place only when complete
    downloads/ledger.json               {url: {sha256, size, path}} recorded on first download
    converted/<record name>/model.safetensors + meta.json
                                        a record's weights in segzoo's layout; meta.json names the
                                        file, its sha256, the source that served it, the sha256 of the
                                        original file it was converted from (a changed upstream file
                                        reconverts) and a fingerprint of the record's weights + arch
                                        (a changed record reconverts)

Hub files live in the Hugging Face cache (``hf_hub_download``: ``HF_HOME`` / ``HF_HUB_CACHE``,
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``). ``HF_HUB_OFFLINE=1`` also keeps release URLs off the network.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, Mapping
from urllib.parse import unquote, urlsplit

import torch

from .convert import to_segzoo
from .errors import ChecksumMismatchError, WeightsUnavailableError

__all__ = ["WeightsUnavailableError", "ChecksumMismatchError", "cache_root", "read_state_dict", "load_checkpoint",
           "load_pretrained", "fetch_weights", "download_url", "hub_download", "record_from_pretrained_dir",
           "save_pretrained", "push_to_hub", "convert_command"]

_log = logging.getLogger("segzoo")

_HUB_DEFAULT_FILES = ("model.safetensors", "pytorch_model.bin")
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
        for name in _HUB_DEFAULT_FILES:
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"checkpoint folder {path} has no {' or '.join(_HUB_DEFAULT_FILES)}")
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


# ---- release URLs ---------------------------------------------------------------------------------
def _ledger_path() -> Path:
    return cache_root() / "downloads" / "ledger.json"


def _read_ledger() -> dict:
    try:
        return json.loads(_ledger_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _record_in_ledger(url: str, entry: dict) -> None:
    ledger = _read_ledger()  # re-read right before writing: another process may have added entries
    ledger[url] = entry
    _atomic_write_bytes(_ledger_path(), json.dumps(ledger, indent=1, sort_keys=True).encode())


def _url_filename(url: str, filename: str | None) -> str:
    name = os.path.basename(filename or unquote(urlsplit(url).path)) or "download"
    return name.lstrip(".") or "download"


def download_url(url: str, *, filename: str | None = None, sha256: str | None = None, progress: bool = True) -> Path:
    """Local path of ``url`` in the download cache, downloading it when absent.

    The body streams into a ``.part`` file beside the target and is renamed into place only when it
    is complete and its sha256 matches ``sha256`` (the record's) or, failing that, the one the ledger
    recorded on the first download. A cached file is verified the same way on every use.
    """
    import requests

    root = cache_root() / "downloads"
    dest = root / hashlib.sha256(url.encode()).hexdigest()[:16] / _url_filename(url, filename)
    ledger_sha = (_read_ledger().get(url) or {}).get("sha256")
    expected = (sha256 or ledger_sha or "").lower() or None
    if dest.is_file():
        actual = _sha256_file(dest)
        if expected is None or actual == expected:
            if ledger_sha is None:
                _record_in_ledger(url, {"sha256": actual, "size": dest.stat().st_size, "path": str(dest.relative_to(root))})
            return dest
        _log.warning("cached %s (%s) does not match its sha256 %s; downloading it again", dest, actual[:12], expected[:12])
        dest.unlink()
    if _offline():
        raise WeightsUnavailableError(f"{url} ({dest.name}) is not in the cache and HF_HUB_OFFLINE is set")

    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(dest.parent)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    from . import __version__
    timeout = _timeout()
    h = hashlib.sha256()
    received = 0
    try:
        try:
            resp = requests.get(url, stream=True, timeout=(timeout, timeout),
                                headers={"User-Agent": f"segzoo/{__version__}", "Accept-Encoding": "identity"})
        except requests.Timeout:
            raise WeightsUnavailableError(f"{url}: no answer within {timeout:g} s") from None
        except requests.RequestException as exc:
            raise WeightsUnavailableError(f"{url}: cannot connect ({_reason(exc)})") from None
        with resp:
            if resp.status_code >= 400:
                raise WeightsUnavailableError(f"{url}: HTTP {resp.status_code} {resp.reason or ''}".rstrip())
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            from huggingface_hub.utils import tqdm
            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, file=sys.stderr,
                       disable=not progress, leave=False)
            try:
                with open(tmp, "wb") as f:
                    for chunk in resp.iter_content(_CHUNK):
                        f.write(chunk)
                        h.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            except (requests.RequestException, ConnectionError, TimeoutError) as exc:
                raise WeightsUnavailableError(f"{url}: download interrupted ({_reason(exc)}); "
                                              "nothing was kept") from None
            finally:
                bar.close()
            if total is not None and received != total:
                raise WeightsUnavailableError(f"{url}: download interrupted after {received} of {total} bytes; "
                                              "nothing was kept")
        actual = h.hexdigest()
        if expected is not None and actual != expected:
            if sha256:
                raise ChecksumMismatchError(f"{url}: sha256 {actual} does not match the record's ({expected}); "
                                            "the file was not kept")
            raise ChecksumMismatchError(f"{url}: sha256 {actual} does not match the one recorded on first download "
                                        f"({expected}); the file was not kept (remove its entry from {_ledger_path()} "
                                        "to accept a changed upstream file)")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _record_in_ledger(url, {"sha256": actual, "size": received, "path": str(dest.relative_to(root))})
    return dest


def _reason(exc: BaseException) -> str:
    """A short, one-line reason from a (possibly deeply wrapped) network exception."""
    text = ""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else text
        nxt = exc.__cause__ or exc.__context__ or (exc.args[0] if exc.args and isinstance(exc.args[0], BaseException)
                                                   else None)
        if nxt is None:
            break
        exc = nxt
    lowered = text.lower()
    for key, short in (("name or service not known", "DNS lookup failed"), ("nodename nor servname", "DNS lookup failed"),
                       ("temporary failure in name resolution", "DNS lookup failed"),
                       ("failed to resolve", "DNS lookup failed"), ("connection refused", "connection refused"),
                       ("timed out", "timed out")):
        if key in lowered:
            return short
    return text[:200] or type(exc).__name__


# ---- the Hugging Face Hub ------------------------------------------------------------------------
def _hub_desc(repo_id: str, filename: str, revision: str | None = None) -> str:
    rev = f"@{revision}" if revision and revision != "main" else ""
    return f"hf-hub:{repo_id}{rev}/{filename}"


def hub_download(repo_id: str, filename: str, *, revision: str | None = None, sha256: str | None = None) -> Path:
    """``hf_hub_download`` with segzoo's errors: any way the file cannot be had (missing repo,
    revision or file, network down, offline and not cached) is one :class:`WeightsUnavailableError`."""
    import huggingface_hub
    from huggingface_hub import constants as hf_constants
    from huggingface_hub.utils import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                       RepositoryNotFoundError, RevisionNotFoundError)
    desc = _hub_desc(repo_id, filename, revision)
    offline = _offline()
    unreachable = None if offline else _unreachable(_hf_endpoint() or hf_constants.ENDPOINT)
    try:
        path = huggingface_hub.hf_hub_download(repo_id, filename, revision=revision, cache_dir=_hf_cache_dir(),
                                               endpoint=_hf_endpoint(), local_files_only=offline or bool(unreachable))
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else f"the Hub cannot be reached ({unreachable or 'network error'})"
        raise WeightsUnavailableError(f"{desc}: not in the Hugging Face cache and {why}") from None
    except RepositoryNotFoundError:
        raise WeightsUnavailableError(f"{desc}: repository {repo_id} not found (or gated/private)") from None
    except RevisionNotFoundError:
        raise WeightsUnavailableError(f"{desc}: revision {revision} not found in {repo_id}") from None
    except EntryNotFoundError:
        raise WeightsUnavailableError(f"{desc}: {repo_id} has no file {filename}") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise WeightsUnavailableError(f"{desc}: HTTP {status or _reason(exc)}") from None
    except Exception as exc:
        if _is_network_error(exc):
            raise WeightsUnavailableError(f"{desc}: cannot reach the Hub ({_reason(exc)})") from None
        raise
    path = Path(path)
    if sha256:
        actual = _sha256_file(path)
        if actual != sha256.lower():
            _drop_hub_file(path)
            raise ChecksumMismatchError(f"{desc}: sha256 {actual} does not match the record's ({sha256}); "
                                        "the file was not kept")
    return path


_REACH: dict[str, tuple[float, str]] = {}


def _unreachable(endpoint: str) -> str | None:
    """Why ``endpoint`` cannot be reached (DNS failure, refused, timeout), or None; a failure is
    remembered for 30 s. A quick TCP connect spares huggingface_hub's ~20 s of retries before it
    falls back on the cache. Skipped (None) where a proxy carries the traffic: only the proxy knows."""
    import socket
    import urllib.request
    parts = urlsplit(endpoint)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxies = urllib.request.getproxies()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return None
    now = time.monotonic()
    known = _REACH.get(endpoint)
    if known is not None and now - known[0] < 30:
        return known[1]
    try:
        socket.create_connection((host, port), timeout=min(_timeout(), 10)).close()
        why = None
    except socket.gaierror:
        why = f"DNS lookup of {host} failed"
    except ConnectionRefusedError:
        why = f"connection to {host}:{port} refused"
    except (socket.timeout, TimeoutError):
        why = f"no answer from {host}:{port}"
    except OSError as exc:
        why = f"{host}:{port}: {exc.strerror or exc}"
    if why is not None:
        _REACH[endpoint] = (now, why)
    return why


def _drop_hub_file(path: Path) -> None:
    blob = Path(os.path.realpath(path))
    for p in {path, blob}:
        try:
            p.unlink()
        except OSError:
            pass


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    for mod_name in ("httpx2", "httpx", "requests"):
        mod = sys.modules.get(mod_name)
        base = getattr(mod, "TransportError", None) or getattr(mod, "RequestException", None) if mod else None
        if base is not None and isinstance(exc, base):
            return True
    return False


def _parse_hf_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``hf-hub:org/repo[@revision][/path/in/repo]`` -> (repo_id, revision, filename)."""
    body = spec[len("hf-hub:"):].strip("/")
    parts = body.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"{spec!r} is not of the form hf-hub:org/repo[@revision][/file]")
    repo, revision = parts[1], None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    return f"{parts[0]}/{repo}", revision or None, "/".join(parts[2:]) or None


# ---- sources in order ----------------------------------------------------------------------------
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


# ---- save_pretrained / push_to_hub / record_from_pretrained_dir ----------------------------------
def _record_fields() -> set:
    from dataclasses import fields
    from .registry import ModelRecord
    return {f.name for f in fields(ModelRecord)}


def _config_dict(model, *, name: str | None = None, class_names=None) -> dict:
    arch = dict(getattr(model, "arch", None) or {})
    if not arch:
        raise TypeError(f"save_pretrained needs a segzoo model (with .arch); got {type(model).__name__}")
    record = getattr(model, "record", None)
    cfg = record.to_dict() if record is not None else {
        "name": name or "segzoo_model", "architecture": arch.get("segmentor", ""),
        "backbone": arch.get("backbone", {}).get("type", ""), "dataset": "", "num_classes": arch["num_classes"]}
    num_classes = int(arch["num_classes"])
    if num_classes != cfg.get("num_classes"):  # a re-headed model: the source's classes and scores no longer apply
        cfg["class_names"], cfg["metrics"] = [], {}
    elif record is not None and _jsonable(dict(arch, num_classes=0)) != _jsonable(dict(record.arch, num_classes=0)):
        cfg["metrics"] = {}  # another network than the one the source scored
    if name:
        cfg["name"] = name
    if class_names is not None:
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        cfg["class_names"] = list(class_names)
    from . import __version__
    cfg.update(arch=arch, num_classes=num_classes, weights=[], library_name="segzoo", segzoo_version=__version__)
    return _jsonable(cfg)  # tuples -> lists, checks it is JSON


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=list))


def save_pretrained(model, save_directory, *, name: str | None = None, class_names=None, repo_id: str | None = None,
                    provenance: Mapping | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (the record, with ``arch``) + ``README.md``
    into ``save_directory``; ``create_model("local-dir:<dir>")`` or, once pushed,
    ``create_model("hf-hub:<repo>")`` builds the model back."""
    folder = Path(save_directory).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    cfg = _config_dict(model, name=name, class_names=class_names)
    if getattr(model, "provenance", None):
        cfg["provenance"] = _jsonable(model.provenance)
    if provenance:
        cfg["converted_from"] = dict(provenance)
    _atomic_save_safetensors(model.state_dict(), folder / "model.safetensors",
                             metadata={"format": "pt", "library": "segzoo", "name": cfg["name"]})
    _atomic_write_bytes(folder / "config.json", (json.dumps(cfg, indent=1) + "\n").encode())
    from .cards import render_model_card
    from .registry import ModelRecord
    record = ModelRecord(**_record_kwargs(cfg))
    card = render_model_card(record, provenance=cfg.get("provenance"))
    if repo_id:
        card = card.replace("hf-hub:<this repo>", f"hf-hub:{repo_id}")
    _atomic_write_bytes(folder / "README.md", card.encode())
    return folder


def push_to_hub(model, repo_id: str, *, token: str | None = None, private: bool | None = None,
                revision: str | None = None, commit_message: str = "Upload segzoo model", create_pr: bool = False,
                name: str | None = None, class_names=None):
    """``save_pretrained`` into a temporary folder, then ``HfApi.create_repo`` + ``upload_folder``.
    Returns huggingface_hub's ``CommitInfo``."""
    from huggingface_hub import HfApi
    api = HfApi(endpoint=_hf_endpoint(), token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory(prefix="segzoo-push-") as tmp:
        save_pretrained(model, tmp, name=name, class_names=class_names, repo_id=repo_id)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, repo_type="model", revision=revision,
                                 commit_message=commit_message, create_pr=create_pr)
    _log.info("pushed %s to %s", getattr(getattr(model, "record", None), "name", "model"), repo_id)
    return info


def _record_kwargs(cfg: Mapping) -> dict:
    kw = {k: v for k, v in cfg.items() if k in _record_fields()}
    for key in ("class_names", "crop_size"):
        if key in kw:
            kw[key] = tuple(kw[key])
    kw["weights"] = tuple(dict(w) for w in kw.get("weights", ()))
    return kw


def record_from_pretrained_dir(spec: str):
    """A :class:`ModelRecord` for ``hf-hub:org/repo[@revision]`` or ``local-dir:/path``, read from the
    folder's ``config.json`` (as written by :func:`save_pretrained`). A Hub repo that a registered
    record already names as its weights (e.g. a transformers repo) resolves to that record."""
    from .registry import ModelRecord, get_record, resolve_name
    if spec.startswith("hf-hub:"):
        repo, revision, _ = _parse_hf_spec(spec)
        known = resolve_name(repo)  # a registered record's repo: that record
        if known is not None:
            return get_record(known)
        path = hub_download(repo, "config.json", revision=revision)
        weights = ({"hf_hub_id": repo, "filename": "model.safetensors", "revision": revision or "main",
                    "format": "segzoo"},)
        default_name = repo.split("/")[-1]
    elif spec.startswith("local-dir:"):
        folder = Path(spec[len("local-dir:"):]).expanduser()
        path = folder / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no config.json (expected the layout save_pretrained writes)")
        weights = ({"path": str(folder / "model.safetensors"), "format": "segzoo"},)
        default_name = folder.name
    else:
        raise ValueError(f"{spec!r}: expected hf-hub:org/repo or local-dir:/path")
    try:
        cfg = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{spec}: config.json is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("arch"), dict):
        raise ValueError(f"{spec}: config.json is not a segzoo config (no 'arch'); "
                         "save the model with segzoo's save_pretrained")
    cfg = dict(cfg, weights=list(weights))
    cfg.setdefault("name", default_name)
    cfg.setdefault("architecture", cfg["arch"].get("segmentor", ""))
    cfg.setdefault("backbone", cfg["arch"].get("backbone", {}).get("type", ""))
    cfg.setdefault("dataset", "")
    cfg.setdefault("num_classes", cfg["arch"]["num_classes"])
    return ModelRecord(**_record_kwargs(cfg))


# ---- segzoo convert -------------------------------------------------------------------------------
def convert_command(args) -> int:
    """``segzoo convert NAME --out DIR [--checkpoint FILE]``: the record's original checkpoint
    (downloaded, or FILE) in save_pretrained's layout, ready for ``push_to_hub``."""
    from ._factory import load_state_dict_strict
    from .models import build_model
    from .registry import get_record

    record = get_record(args.name)
    arch = dict(record.arch)
    model = build_model(arch)

    def load(sd, fmt, src):
        load_state_dict_strict(model, sd, prefix="backbone." if fmt == "timm" else "", source=src)

    if args.checkpoint:
        sd, fmt, src = load_checkpoint(args.checkpoint, arch)
        load(sd, fmt, src)
    else:
        sd, fmt, src = load_pretrained(record, arch, load=load)
    model.record = record
    out = save_pretrained(model, args.out, provenance={"source": src, "format": fmt,
                                                       "weights": [dict(w) for w in record.weights]})
    digest = _sha256_file(out / "model.safetensors")
    print(f"{record.name}: {fmt} weights from {src}")
    print(f"wrote {out}: model.safetensors (sha256 {digest}), config.json, README.md")
    return 0
