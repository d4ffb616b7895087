"""A small Hugging Face Hub + release-file server on 127.0.0.1 for the weight-source tests.

Speaks the endpoints huggingface_hub uses (checked against huggingface_hub 2.4's file_download.py,
hf_api.py and _commit_api.py):

- ``HEAD/GET /{org}/{repo}/resolve/{revision}/{path}``: ``X-Repo-Commit`` and an ``ETag`` on every
  answer; small files come back directly (ETag = git blob sha1), weight files (``.safetensors``,
  ``.bin``, ``.pth``) as a 302 to a second "CDN" server (another origin, so the client does not
  follow the HEAD redirect and reads ``X-Linked-Etag`` = sha256 and ``X-Linked-Size`` from it).
  Missing repo / revision / file: 404 with ``X-Error-Code`` RepoNotFound / RevisionNotFound /
  EntryNotFound.
- ``POST /api/repos/create``, ``POST /api/validate-yaml`` (the model card's front matter),
  ``POST /api/models/{repo}/preupload/{rev}`` (every file "regular", so
  no LFS/Xet storage is needed) and ``POST /api/models/{repo}/commit/{rev}`` (ndjson, base64 files):
  what ``HfApi.create_repo`` + ``upload_folder`` send.
- any other ``GET`` path: a plain release file added with :meth:`HubEmulator.add_url_file`, with
  optional faults (status code, body cut mid-way, an answer later than the client's timeout).
"""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Repo:
    def __init__(self):
        self.commits: dict[str, dict[str, bytes]] = {}
        self.branches: dict[str, str] = {}
        self._commit({".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}, "main")

    def _commit(self, files: dict[str, bytes], branch: str) -> str:
        parent = self.branches.get(branch, "")
        h = hashlib.sha1(parent.encode())
        for path in sorted(files):
            h.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
        sha = h.hexdigest()
        self.commits[sha] = dict(files)
        self.branches[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None

    def files(self, branch: str = "main") -> dict[str, bytes]:
        return dict(self.commits[self.branches[branch]])


class HubEmulator:
    """Start with ``with HubEmulator() as hub:`` (or start()/stop()); ``hub.endpoint`` is the base URL."""

    def __init__(self):
        self.repos: dict[str, _Repo] = {}
        self.url_files: dict[str, bytes] = {}
        self.faults: dict[str, object] = {}   # path -> int status | "truncate" | ("sleep", seconds)
        self.log: list[tuple[str, str]] = []  # (method, path) of every request
        self.cards: list[str] = []            # README.md contents sent to /api/validate-yaml
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self._conns: set[socket.socket] = set()

    # ---- content --------------------------------------------------------------------------------
    def add_repo_file(self, repo_id: str, path: str, data: bytes, branch: str = "main") -> str:
        with self._lock:
            repo = self.repos.setdefault(repo_id, _Repo())
            files = repo.files(branch) if branch in repo.branches else {}
            files[path] = data
            return repo._commit(files, branch)

    def add_url_file(self, path: str, data: bytes) -> str:
        self.url_files["/" + path.lstrip("/")] = data
        return self.url(path)

    def url(self, path: str) -> str:
        return f"{self.endpoint}/{path.lstrip('/')}"

    def requests_to(self, fragment: str) -> list[tuple[str, str]]:
        return [r for r in self.log if fragment in r[1]]

    # ---- server ---------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def start(self) -> "HubEmulator":
        for role in ("hub", "cdn"):
            handler = type(f"_{role}Handler", (_Handler,), {"emulator": self, "role": role})
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        """Stop listening and cut every open (keep-alive) connection: afterwards the port refuses."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "HubEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    emulator: HubEmulator
    role: str

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def setup(self) -> None:
        super().setup()
        with self.emulator._lock:
            self.emulator._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.emulator._lock:
                self.emulator._conns.discard(self.connection)

    # ---- plumbing -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head_only: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only and body:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None, head_only: bool = False) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}, head_only)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _path(self) -> str:
        return urlsplit(self.path).path

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = self._path()
        self.emulator.log.append((method, path))
        head = method == "HEAD"
        if self.role == "cdn":
            return self._cdn(path, head)
        if method == "POST":
            return self._api(path)
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(f"{parts[0]}/{parts[1]}", unquote(parts[3]), unquote("/".join(parts[4:])), head)
        return self._url_file(path, head)

    # ---- Hub file download ----------------------------------------------------------------------
    def _resolve(self, repo_id: str, revision: str, filename: str, head: bool) -> None:
        em = self.emulator
        repo = em.repos.get(repo_id)
        if repo is None:
            return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound",
                                                                       "X-Error-Message": "Repository not found"}, head)
        commit = repo.resolve(revision)
        if commit is None:
            return self._json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"}, head)
        data = repo.commits[commit].get(filename)
        if data is None:
            return self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound",
                                                                  "X-Repo-Commit": commit}, head)
        if filename.endswith(_LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            with em._lock:
                em.url_files[f"/blobs/{sha}"] = data
            return self._send(302, b"", {"Location": f"{em.cdn}/blobs/{sha}", "X-Repo-Commit": commit,
                                         "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": len(data),
                                         "ETag": f'"{git_blob_sha1(data)}"'}, head)
        return self._send(200, data, {"X-Repo-Commit": commit, "ETag": f'"{git_blob_sha1(data)}"',
                                      "Content-Type": "application/octet-stream"}, head)

    def _cdn(self, path: str, head: bool) -> None:
        data = self.emulator.url_files.get(path) if path.startswith("/blobs/") else None
        if data is None:
            return self._send(404, b"not found", head_only=head)
        self._send(200, data, {"Content-Type": "application/octet-stream", "ETag": f'"{path.rsplit("/", 1)[-1]}"'}, head)

    # ---- release files ----------------------------------------------------------------------------
    def _url_file(self, path: str, head: bool) -> None:
        em = self.emulator
        fault = em.faults.get(path)
        if isinstance(fault, tuple) and fault[0] == "sleep":
            time.sleep(fault[1])
        elif isinstance(fault, int):
            return self._send(fault, b"error", head_only=head)
        data = em.url_files.get(path)
        if data is None:
            return self._send(404, b"Not Found", {"Content-Type": "text/plain"}, head)
        if fault == "truncate" and not head:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(200, data, {"Content-Type": "application/octet-stream"}, head)

    def _validate_yaml(self, content: str) -> None:
        import yaml
        errors = []
        if content.startswith("---"):
            front, sep, _ = content[3:].partition("\n---")
            try:
                meta = yaml.safe_load(front) if sep else None
                if not isinstance(meta, dict):
                    errors.append({"message": "metadata must be a YAML mapping between '---' lines"})
            except yaml.YAMLError as exc:
                errors.append({"message": f"invalid YAML: {exc}"})
        self.emulator.cards.append(content)
        self._json(400 if errors else 200, {"errors": errors, "warnings": []})

    # ---- upload API -----------------------------------------------------------------------------
    def _api(self, path: str) -> None:
        em = self.emulator
        body = self._body()
        if path == "/api/repos/create":
            req = json.loads(body)
            repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            with em._lock:
                exists = repo_id in em.repos
                em.repos.setdefault(repo_id, _Repo())
            if exists:
                return self._json(409, {"error": "You already created this model repo", "url": em.url(repo_id)})
            return self._json(200, {"url": em.url(repo_id), "name": repo_id})
        if path == "/api/validate-yaml":  # the model card's front matter, checked before an upload
            return self._validate_yaml(json.loads(body)["content"])
        parts = path.strip("/").split("/")  # api, models, org, repo, preupload|commit, rev
        if len(parts) != 6 or parts[:2] != ["api", "models"] or parts[4] not in ("preupload", "commit"):
            return self._json(404, {"error": f"no such endpoint {path}"})
        repo = em.repos.get(f"{parts[2]}/{parts[3]}")
        branch = unquote(parts[5])
        if repo is None:
            return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        if branch not in repo.branches:
            return self._json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        current = repo.files(branch)
        if parts[4] == "preupload":
            files = json.loads(body)["files"]
            return self._json(200, {"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                 "oid": git_blob_sha1(current[f["path"]]) if f["path"] in current else None} for f in files]})
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "file":
                current[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                current.pop(value["path"], None)
            elif key != "header":
                return self._json(400, {"error": f"the emulator does not handle {key} operations"})
        with em._lock:
            sha = repo._commit(current, branch)
        self._json(200, {"commitUrl": em.url(f"{parts[2]}/{parts[3]}/commit/{sha}"), "commitOid": sha,
                         "pullRequestUrl": None})
