"""The Hugging Face Hub: ``hf_hub_download`` with segzoo's errors and a quick reachability probe."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ChecksumMismatchError, WeightsUnavailableError
from .download import _reason
from .files import _hf_cache_dir, _hf_endpoint, _offline, _sha256_file, _timeout


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
