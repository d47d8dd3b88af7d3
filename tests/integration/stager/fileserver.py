"""A real HTTP server for the stager's tests: static files and the Hub routes the stager uses.

Routes (all with Range, If-Match and ETag):
  GET|HEAD /files/<path>                               static files
  GET /api/{models|datasets}/<org>/<name>/revision/<rev>   what HfApi.repo_info(...,
                                                       files_metadata=True) calls (?blobs=true)
  GET|HEAD /[datasets/]<org>/<name>/resolve/<rev>/<file>   hf_hub_url(); LFS files may be
                                                       redirected to /cdn/<sha256> on another
                                                       host name, like the real Hub's CDN
Fault hooks, keyed by the served file's key (see `key_of`): cut the connection at byte N,
stall at byte N until released, change the file at byte N, corrupt one byte at offset N.
Bytes served are counted per key. Large bodies go out with sendfile().
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_RESOLVE = re.compile(r"^/(?:(datasets)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_API = re.compile(r"^/api/(models|datasets)/([^/]+/[^/]+)/revision/([^/]+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 << 20):
            h.update(block)
    return h.hexdigest()


class HubRepo:
    """A repository at one commit; LFS files are the large ones (like the real Hub)."""

    def __init__(self, files: dict[str, Path], commit: str, *, branches=("main",),
                 token: str | None = None, lfs_threshold: int = 1 << 20):
        self.files = files
        self.commit = commit
        self.revisions = {commit: commit, **{b: commit for b in branches}}
        self.token = token
        self.lfs_threshold = lfs_threshold
        self.meta = {}
        for name, path in files.items():
            size = path.stat().st_size
            if size >= lfs_threshold or name.endswith(".safetensors"):
                sha = sha256_file(path)
                pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\n"
                           f"size {size}\n").encode()
                self.meta[name] = {"rfilename": name, "size": size,
                                   "blobId": git_blob_sha1(pointer),
                                   "lfs": {"sha256": sha, "size": size,
                                           "pointerSize": len(pointer)}}
            else:
                self.meta[name] = {"rfilename": name, "size": size,
                                   "blobId": git_blob_sha1(path.read_bytes())}

    def etag(self, name: str) -> str:
        m = self.meta[name]
        return '"%s"' % (m["lfs"]["sha256"] if "lfs" in m else m["blobId"])


class FileServer:
    def __init__(self, host: str = "127.0.0.1"):
        self.files: dict[str, Path] = {}
        self.repos: dict[str, HubRepo] = {}
        self.lfs_redirect = False
        self.served: Counter = Counter()
        self.requests: list[tuple[str, str, dict]] = []
        self.cut_at: dict[str, int] = {}
        self.stall_at: dict[str, tuple[int, threading.Event]] = {}
        self.change_at: dict[str, tuple[int, bytes]] = {}
        self.corrupt_at: dict[str, int] = {}
        self.stalled = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = _QuietServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        for _n, event in self.stall_at.values():
            event.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def add_file(self, url_path: str, path: Path) -> str:
        self.files[url_path.lstrip("/")] = path
        return f"{self.url}/files/{url_path.lstrip('/')}"

    def add_repo(self, repo_id: str, repo: HubRepo) -> None:
        self.repos[repo_id] = repo

    @staticmethod
    def key_of(url_path: str) -> str:
        """`files/<path>` or `<repo>/<file>` (hub) or `cdn/<sha256>`."""
        return url_path

    def total_served(self) -> int:
        with self._lock:
            return sum(self.served.values())

    def count(self, key: str, n: int) -> None:
        with self._lock:
            self.served[key] += n


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # clients we cut off on purpose
        pass


class _Handler(BaseHTTPRequestHandler):
    owner: FileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_HEAD(self):
        self._route(head=True)

    def do_GET(self):
        self._route(head=False)

    def _route(self, head: bool):
        srv = self.owner
        path = unquote(urlsplit(self.path).path)
        srv.requests.append((self.command, path, dict(self.headers.items())))
        if path.startswith("/files/"):
            local = srv.files.get(path[len("/files/"):])
            if local is None:
                return self._error(404)
            etag = f'"{local.stat().st_size:x}-{local.stat().st_mtime_ns:x}"'
            return self._send_file(path[len("/files/"):], local, etag, head)
        if path.startswith("/cdn/"):
            for repo in srv.repos.values():
                for name, meta in repo.meta.items():
                    if meta.get("lfs", {}).get("sha256") == path[5:]:
                        return self._send_file(f"{_repo_key(srv, repo)}/{name}",
                                               repo.files[name], repo.etag(name), head)
            return self._error(404)
        m = _API.match(path)
        if m:
            return self._api(m.group(2), unquote(m.group(3)))
        m = _RESOLVE.match(path)
        if m:
            return self._resolve(m.group(2), unquote(m.group(3)), m.group(4), head)
        return self._error(404)

    def _authorized(self, repo: HubRepo) -> bool:
        return repo.token is None or self.headers.get("Authorization") == f"Bearer {repo.token}"

    def _api(self, repo_id: str, rev: str):
        repo = self.owner.repos.get(repo_id)
        if repo is None:
            return self._error(404, code="RepoNotFound")
        if not self._authorized(repo):
            return self._error(401, code="RepoNotFound")
        if rev not in repo.revisions:
            return self._error(404, code="RevisionNotFound")
        body = json.dumps({"id": repo_id, "modelId": repo_id, "sha": repo.revisions[rev],
                           "private": repo.token is not None,
                           "siblings": [repo.meta[n] for n in sorted(repo.meta)]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _resolve(self, repo_id: str, rev: str, name: str, head: bool):
        srv = self.owner
        repo = srv.repos.get(repo_id)
        if repo is None:
            return self._error(404, code="RepoNotFound")
        if not self._authorized(repo):
            return self._error(401, code="RepoNotFound")
        if rev not in repo.revisions:
            return self._error(404, code="RevisionNotFound")
        if name not in repo.files:
            return self._error(404, code="EntryNotFound")
        meta = repo.meta[name]
        if srv.lfs_redirect and "lfs" in meta:
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{srv.port}/cdn/{meta['lfs']['sha256']}")
            self.send_header("X-Linked-Etag", repo.etag(name))
            self.send_header("X-Linked-Size", str(meta["size"]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._send_file(f"{repo_id}/{name}", repo.files[name], repo.etag(name), head,
                               extra={"X-Repo-Commit": repo.revisions[rev]})

    def _error(self, status: int, code: str | None = None):
        body = json.dumps({"error": code or str(status)}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_file(self, key: str, local: Path, etag: str, head: bool, extra=None):
        srv = self.owner
        size = local.stat().st_size
        if_match = self.headers.get("If-Match")
        if if_match and if_match.strip() != etag:
            return self._error(412)
        start, status = 0, 200
        m = _RANGE.match(self.headers.get("Range", ""))
        if m:
            start = int(m.group(1))
            if start >= size > 0:
                return self._error(416)
            status = 206
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(size - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if head:
            return None
        self.wfile.flush()
        with open(local, "rb") as f:
            self._send_body(srv, key, local, f, start, size)
        return None

    def _send_body(self, srv: FileServer, key: str, local: Path, f, pos: int, size: int):
        sock = self.connection
        faulty = any(key in d for d in (srv.cut_at, srv.stall_at, srv.change_at, srv.corrupt_at))
        while pos < size:
            stop = size
            for table in (srv.cut_at, srv.stall_at, srv.change_at, srv.corrupt_at):
                at = table.get(key)
                if at is not None:
                    n = at[0] if isinstance(at, tuple) else at
                    if n >= pos:
                        stop = min(stop, n + (1 if table is srv.corrupt_at else 0))
            if pos == stop:
                if self._fault(srv, key, local, pos):
                    return
                continue
            count = min(stop - pos, 8 << 20)
            if faulty and key in srv.corrupt_at and srv.corrupt_at[key] == stop - 1 \
                    and pos + count == stop:
                f.seek(pos)
                data = bytearray(f.read(count))
                data[-1] ^= 0xFF
                del srv.corrupt_at[key]
                sock.sendall(data)
                sent = count
            else:
                try:
                    sent = os.sendfile(sock.fileno(), f.fileno(), pos, count)
                except (BrokenPipeError, ConnectionResetError):
                    return
                if sent == 0:  # the file shrank under us: the promised length cannot be met
                    self._drop()
                    return
            srv.count(key, sent)
            pos += sent

    def _fault(self, srv: FileServer, key: str, local: Path, pos: int) -> bool:
        """Apply the fault due at `pos`; True if the connection was dropped."""
        if srv.cut_at.get(key) == pos:
            del srv.cut_at[key]
            self._drop()
            return True
        stall = srv.stall_at.get(key)
        if stall and stall[0] == pos:
            del srv.stall_at[key]
            srv.stalled.set()
            stall[1].wait(120)
            self._drop()
            return True
        change = srv.change_at.get(key)
        if change and change[0] == pos:
            del srv.change_at[key]
            with open(local, "r+b") as f:  # overwritten in place, like `cp new old`
                f.write(change[1])
                f.truncate()
            return False
        return False

    def _drop(self):
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True


def _repo_key(srv: FileServer, repo: HubRepo) -> str:
    return next(k for k, v in srv.repos.items() if v is repo)
