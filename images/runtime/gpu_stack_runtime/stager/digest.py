"""Digests: sha256 (always computed), plus the source's own (git blob sha1, S3 md5)."""

from __future__ import annotations

import hashlib
from pathlib import Path

READ_CHUNK = 4 << 20
ALGORITHMS = ("sha256", "git-sha1", "md5")


class MultiHasher:
    """Feeds the same bytes to every hash the file must be checked against."""

    def __init__(self, algorithms, size: int):
        self._hashes = {}
        for name in {"sha256", *algorithms}:
            if name == "git-sha1":
                # A git blob id is sha1("blob <size>\0" + content).
                h = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
            elif name == "md5":
                h = hashlib.md5(usedforsecurity=False)
            elif name == "sha256":
                h = hashlib.sha256()
            else:
                raise ValueError(f"unknown digest algorithm {name!r}")
            self._hashes[name] = h

    def update(self, data) -> None:
        for h in self._hashes.values():
            h.update(data)

    def update_from_file(self, path: Path, length: int) -> None:
        """Hash the first `length` bytes of `path` (the prefix of a resumed file)."""
        with open(path, "rb") as f:
            remaining = length
            while remaining > 0:
                block = f.read(min(READ_CHUNK, remaining))
                if not block:
                    raise OSError(f"{path} is shorter than {length} bytes")
                self.update(block)
                remaining -= len(block)

    def hexdigests(self) -> dict[str, str]:
        return {name: h.hexdigest() for name, h in self._hashes.items()}


def mismatches(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """Names of the algorithms whose expected value differs from the computed one."""
    return [k for k, v in expected.items() if actual.get(k, "").lower() != v.lower()]


def file_digests(path: Path, algorithms=(), size: int | None = None) -> dict[str, str]:
    """Hash a whole file on disk."""
    if size is None:
        size = path.stat().st_size
    hasher = MultiHasher(algorithms, size)
    hasher.update_from_file(path, size)
    return hasher.hexdigests()
