"""Release-URL downloads: streamed into a ``.part`` file, checked against the ledger's sha256, renamed into place."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import ChecksumMismatchError, WeightsUnavailableError
from .files import _CHUNK, _atomic_write_bytes, _offline, _remove_stale_parts, _sha256_file, _timeout, cache_root

_log = logging.getLogger("segzoo")


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
    from .._version import __version__
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
