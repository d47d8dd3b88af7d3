"""Files the controller already uploaded into the staging area: verify, then move in place."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from gpu_stack_runtime.stager.digest import file_digests
from gpu_stack_runtime.stager.errors import ConfigError, IntegrityError
from gpu_stack_runtime.stager.model import Listing, RemoteFile, load_manifest
from gpu_stack_runtime.stager.sources.base import Source


class LocalSource(Source):
    kind = "local"

    def __init__(self, upload_dir: Path, staging_dir: Path, manifest_text: str, origin: str):
        self._upload = upload_dir
        self._staging = staging_dir
        self._manifest = load_manifest(manifest_text, origin)
        self._manifest_sha = hashlib.sha256(manifest_text.encode()).hexdigest()
        unsized = [p for p, e in self._manifest.items() if e["size"] is None]
        if unsized:
            raise ConfigError(f"manifest {origin}: the local source needs sizes "
                              f"(JSON manifest); missing for {', '.join(unsized[:5])}")

    def describe(self) -> dict:
        return {"type": self.kind, "manifest_sha256": self._manifest_sha}

    def list(self) -> Listing:
        files = [RemoteFile(p, e["size"], {"sha256": e["sha256"]}, None, self._upload / p)
                 for p, e in sorted(self._manifest.items())]
        return Listing(files, None)

    needs_space = False

    def preflight(self, pending) -> None:
        """Every pending file must be uploaded with its manifest size: report all at once."""
        problems = []
        for rf in pending:
            try:
                size = os.stat(rf.ref).st_size
            except FileNotFoundError:
                problems.append(f"{rf.path}: not uploaded")
                continue
            if size != rf.size:
                problems.append(f"{rf.path}: {size} bytes uploaded, manifest says {rf.size}")
        if problems:
            raise IntegrityError(f"upload in {self._upload} is incomplete: " + "; ".join(problems))

    def adopt(self, rf: RemoteFile, dest: Path) -> dict[str, str]:
        src = Path(rf.ref)
        self.preflight([rf])
        digests = file_digests(src, rf.digests, rf.size)
        if digests["sha256"] != rf.digests["sha256"]:
            raise IntegrityError(f"{rf.path}: uploaded file has sha256 {digests['sha256']}, "
                                 f"manifest says {rf.digests['sha256']}; upload it again")
        os.replace(src, dest)
        return digests

    def discard_upload(self) -> None:
        """After a successful run: what is left of this upload (files a no-op run did not
        need, the empty directories) is removed, so an upload never outlives its run."""
        shutil.rmtree(self._upload, ignore_errors=True)
