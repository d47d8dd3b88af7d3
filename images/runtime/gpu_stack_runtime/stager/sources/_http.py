"""The one HTTP client of the stager (urllib3), shared by the http, archive and hub sources."""

from __future__ import annotations

from collections.abc import Iterator

import urllib3
from urllib3.exceptions import HTTPError as _Urllib3Error

from gpu_stack_runtime.stager.errors import (
    CredentialsError,
    SourceChangedError,
    SourceNotFoundError,
    TransientError,
)
from gpu_stack_runtime.stager.sources.base import Stream


def redact_url(url: str) -> str:
    """Drop user:password@ and the query string (signed URLs carry secrets there)."""
    parsed = urllib3.util.parse_url(url)
    return parsed._replace(auth=None, query=None, fragment=None).url


class HttpStream(Stream):
    def __init__(self, resp, start: int, url: str):
        self._resp = resp
        self.start = start
        self._url = url
        self.etag = resp.headers.get("ETag")

    def chunks(self, size: int) -> Iterator[bytes]:
        try:
            while True:
                data = self._resp.read1(size)  # what has arrived: a kill loses little
                if not data:
                    return
                yield data
        except (_Urllib3Error, OSError) as exc:
            raise _transient(self._url, exc) from exc

    def read(self, size: int = -1) -> bytes:
        """File-like read for tarfile/zip streaming."""
        try:
            return self._resp.read(None if size is None or size < 0 else size)
        except (_Urllib3Error, OSError) as exc:
            raise _transient(self._url, exc) from exc

    def close(self) -> None:
        self._resp.release_conn()
        self._resp.close()


class HttpClient:
    """urllib3 pool with our error mapping; credentials only ever in headers."""

    def __init__(self, *, headers: dict | None = None, timeout: float = 60.0,
                 ca_file: str | None = None, pool_size: int = 8):
        self._headers = dict(headers or {})
        retries = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0,
                                redirect=10, raise_on_redirect=True)
        self._pool = urllib3.PoolManager(
            num_pools=4, maxsize=pool_size, ca_certs=ca_file, retries=retries,
            timeout=urllib3.Timeout(connect=min(timeout, 15.0), read=timeout))

    def request(self, method: str, url: str, headers: dict | None = None, *,
                missing=SourceNotFoundError):
        """Send a request, map errors; the caller reads and releases the response."""
        merged = {**self._headers, **(headers or {})}
        try:
            resp = self._pool.request(method, url, headers=merged, preload_content=False,
                                      decode_content=False)
        except (_Urllib3Error, OSError) as exc:
            raise TransientError(f"{method} {redact_url(url)}: {exc.__class__.__name__}") from exc
        if resp.status < 400:
            return resp
        body = resp.read(2048).decode("utf-8", "replace")
        resp.release_conn()
        what = f"{method} {redact_url(url)}: HTTP {resp.status}"
        if resp.status in (401, 403):
            raise CredentialsError(f"{what}: access refused (missing or invalid credentials)")
        if resp.status in (404, 410):
            raise missing(f"{what}: not found")
        if resp.status in (412, 416):
            raise SourceChangedError(f"{what}: the file changed on the server")
        if resp.status in (408, 425, 429) or resp.status >= 500:
            raise TransientError(what)
        raise SourceNotFoundError(f"{what}: {body[:200]}")

    def get_bytes(self, url: str, limit: int = 64 << 20) -> bytes:
        resp = self.request("GET", url)
        try:
            return HttpStream(resp, 0, url).read(limit)
        finally:
            resp.release_conn()

    def head(self, url: str) -> tuple[int | None, str | None]:
        resp = self.request("HEAD", url)
        resp.release_conn()
        length = resp.headers.get("Content-Length")
        return (int(length) if length is not None else None), resp.headers.get("ETag")

    def open_range(self, url: str, offset: int, *, size: int | None,
                   etag: str | None) -> HttpStream:
        """GET from `offset`; If-Match on a strong ETag so a changed file fails with 412."""
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        if etag and not etag.startswith("W/"):
            headers["If-Match"] = etag
        resp = self.request("GET", url, headers, missing=SourceChangedError)
        start = 0
        if resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range", ""))
            if size is not None and total is not None and total != size:
                resp.release_conn()
                raise SourceChangedError(
                    f"{redact_url(url)}: size is now {total} bytes, listed {size}")
        elif size is not None and resp.headers.get("Content-Length") is not None:
            length = int(resp.headers["Content-Length"])
            if length != size:
                resp.release_conn()
                raise SourceChangedError(
                    f"{redact_url(url)}: size is now {length} bytes, listed {size}")
        got_etag = resp.headers.get("ETag")
        strong = etag and not etag.startswith("W/")
        if strong and got_etag and got_etag.strip('"') != etag.strip('"'):
            resp.release_conn()
            raise SourceChangedError(f"{redact_url(url)}: ETag changed from {etag} to {got_etag}")
        return HttpStream(resp, start, url)

    def close(self) -> None:
        self._pool.clear()


def _transient(url: str, exc: Exception) -> TransientError:
    return TransientError(f"{redact_url(url)}: {exc.__class__.__name__}: {exc}")


def _content_range(value: str) -> tuple[int, int | None]:
    # "bytes 100-199/1000"
    try:
        rest = value.partition(" ")[2]
        span, total = rest.split("/", 1)
        start = int(span.split("-")[0])
        return start, (None if total == "*" else int(total))
    except ValueError as exc:
        raise TransientError(f"bad Content-Range {value!r}") from exc
