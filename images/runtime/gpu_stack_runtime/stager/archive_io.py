"""File objects over HTTP for archive unpacking: a counting/hashing reader and a seekable
Range-request reader (zip)."""

from __future__ import annotations

import hashlib
import io


class Reader(io.RawIOBase):
    """Wraps a stream: counts progress and hashes every byte when `hash_all`."""

    def __init__(self, stream, progress, *, hash_all: bool):
        self._stream = stream
        self._progress = progress
        self.hash_all = hash_all
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if data:
            if self.hash_all:
                self._hash.update(data)
            self._progress.add(len(data))
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read the trailing padding so the whole archive is hashed."""
        while self.read(1 << 20):
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class RangeFile(io.RawIOBase):
    """A seekable read-only file over HTTP: sequential reads share one ranged GET."""

    def __init__(self, client, url: str, size: int, etag: str | None):
        self._client, self._url, self._size, self._etag = client, url, size, etag
        self._pos = 0
        self._stream = None
        self._stream_pos = -1

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf) -> int:
        if self._pos >= self._size:
            return 0
        if self._stream is None or self._stream_pos != self._pos:
            self._reopen()
        try:
            data = self._stream.read(len(buf))
        except Exception:
            self._drop()
            raise
        buf[: len(data)] = data
        self._pos += len(data)
        self._stream_pos = self._pos
        return len(data)

    def _reopen(self) -> None:
        self._drop()
        self._stream = self._client.open_range(self._url, self._pos, size=self._size,
                                               etag=self._etag)
        self._stream_pos = self._pos

    def _drop(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def close(self) -> None:
        self._drop()
        super().close()
