"""The contract every source implements for the transfer engine."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from gpu_stack_runtime.stager.model import Listing, RemoteFile


class Stream(ABC):
    """Bytes of one file from `start` on. `start` is 0 if the source ignored the offset."""

    start: int = 0

    @abstractmethod
    def chunks(self, size: int) -> Iterator[bytes]:
        """Yield the bytes; raise TransientError on a broken transfer."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Source(ABC):
    """A place model files come from."""

    kind: str = "?"

    @abstractmethod
    def describe(self) -> dict:
        """The source's identity for the marker: no secrets, stable across reruns."""

    @abstractmethod
    def list(self) -> Listing:
        """Files with sizes and digests. Raises before anything is written."""

    def open(self, rf: RemoteFile, offset: int) -> Stream:
        """Stream `rf` from `offset`; SourceChangedError if it differs from its listing."""
        raise NotImplementedError

    #: False when files are moved within the volume (no extra space needed).
    needs_space = True

    def preflight(self, pending: list[RemoteFile]) -> None:  # noqa: B027 - optional hook
        """Checks on the files still to fetch, before anything is written (optional)."""

    def adopt(self, rf: RemoteFile, dest: Path) -> dict[str, str] | None:
        """Place `rf` at `dest` without streaming (local source); None if not supported."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
