"""What a source lists: the files to stage, with sizes, digests and version tags."""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from gpu_stack_runtime.stager.errors import ConfigError, UnsafeArchiveError

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a source. `digests` are what the bytes are verified against."""

    path: str
    size: int
    digests: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    etag: str | None = None
    ref: Any = field(default=None, hash=False, compare=False)

    def identity(self) -> dict:
        """What must not change between listing and download (and between runs)."""
        return {"path": self.path, "size": self.size, "digests": self.digests, "etag": self.etag}


@dataclass(frozen=True)
class Listing:
    """A source's content at one version. `revision` is the resolved version, if any."""

    files: list[RemoteFile]
    revision: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def safe_relpath(name: str, *, error=UnsafeArchiveError) -> str:
    """Normalise a relative POSIX path; refuse absolute paths and any `..` escape."""
    if not name or "\0" in name:
        raise error(f"invalid path {name!r}")
    if name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name) or "\\" in name:
        raise error(f"refusing absolute or non-POSIX path {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise error(f"refusing path {name!r}: it escapes the destination")
    return posixpath.join(*parts)


def load_manifest(text: str, origin: str) -> dict[str, dict]:
    """Parse a manifest: JSON {"files": [{path, size, sha256}]} or `sha256sum` output.

    Returns {path: {"size": int | None, "sha256": hex}}.
    """
    stripped = text.lstrip()
    entries: dict[str, dict] = {}
    if stripped.startswith("{"):
        try:
            doc = json.loads(text)
            rows = doc["files"]
            for row in rows:
                path = safe_relpath(row["path"], error=ConfigError)
                size = row.get("size")
                entries[path] = {"size": int(size) if size is not None else None,
                                 "sha256": _check_hex(row["sha256"], origin)}
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"manifest {origin} is not valid: {exc}") from exc
    else:
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            hexdigest, sep, name = line.partition(" ")
            if not sep:
                raise ConfigError(f"manifest {origin} line {lineno}: expected '<sha256>  <path>'")
            name = name.lstrip(" *")
            entries[safe_relpath(name, error=ConfigError)] = {
                "size": None, "sha256": _check_hex(hexdigest, origin)}
    if not entries:
        raise ConfigError(f"manifest {origin} lists no files")
    return entries


def _check_hex(value: str, origin: str) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise ConfigError(f"manifest {origin}: {value!r} is not a sha256 hex digest")
    return value.lower()
