"""HTTP(S) files listed in a sha256 manifest, fetched with Range requests."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

from gpu_stack_runtime.stager.errors import StageError
from gpu_stack_runtime.stager.model import Listing, RemoteFile, load_manifest
from gpu_stack_runtime.stager.retry import retry_call
from gpu_stack_runtime.stager.sources._http import HttpClient, redact_url
from gpu_stack_runtime.stager.sources.base import Source


class HttpFilesSource(Source):
    kind = "http"

    def __init__(self, base_url: str, manifest_text: str, manifest_origin: str,
                 client: HttpClient, *, retries: int = 8):
        self._base = base_url.rstrip("/")
        self._manifest = load_manifest(manifest_text, manifest_origin)
        self._manifest_sha = hashlib.sha256(manifest_text.encode()).hexdigest()
        self._client = client
        self._retries = retries

    def describe(self) -> dict:
        return {"type": self.kind, "url": redact_url(self._base),
                "manifest_sha256": self._manifest_sha}

    def url_of(self, path: str) -> str:
        return f"{self._base}/{quote(path)}"

    def list(self) -> Listing:
        files = []
        for path, entry in sorted(self._manifest.items()):
            url = self.url_of(path)
            size = entry["size"]
            if size is None:
                size, _etag = retry_call(lambda u=url: self._client.head(u),
                                         retries=self._retries, what=f"HEAD {redact_url(url)}")
                if size is None:
                    raise StageError(f"{redact_url(url)}: no size in the manifest or from HEAD")
            files.append(RemoteFile(path, size, {"sha256": entry["sha256"]}, None, url))
        return Listing(files, None)

    def open(self, rf: RemoteFile, offset: int, etag: str | None = None):
        return self._client.open_range(rf.ref, offset, size=rf.size, etag=etag)

    def close(self) -> None:
        self._client.close()
