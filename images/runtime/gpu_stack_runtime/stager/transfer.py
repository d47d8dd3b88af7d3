"""The transfer engine: bounded parallel, resumable, verified writes into the staging dir.

Per file: `<path>.part` grows until complete, a `<path>.part.json` sidecar records which
version of the source file the partial bytes belong to, the digests are checked, then
the partial is renamed to `<path>`. A journal records finished files, so a rerun after
a kill re-sends only what was unfinished.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from gpu_stack_runtime.stager.digest import MultiHasher, mismatches
from gpu_stack_runtime.stager.errors import (
    InsufficientSpaceError,
    SourceChangedError,
    StageError,
    TransientError,
)
from gpu_stack_runtime.stager.model import RemoteFile
from gpu_stack_runtime.stager.progress import Progress
from gpu_stack_runtime.stager.retry import retry_call

log = logging.getLogger("gpu_stack_runtime.stager")

CHUNK = 1 << 20
# A file without any digest resumes only from its last fsync'd checkpoint: bytes after it
# could be garbage after a node crash, and nothing would catch that later.
CHECKPOINT = 64 << 20
JOURNAL = ".gpu-stack-journal.json"
PART = ".part"
SIDECAR = ".part.json"


@dataclass
class FileResult:
    """A file complete in the staging dir, with what it was verified against."""

    path: str
    size: int
    digests: dict[str, str]
    verified: list[str]
    mtime_ns: int = 0

    def as_json(self) -> dict:
        return {"path": self.path, "size": self.size, "sha256": self.digests["sha256"],
                "digests": self.digests, "verified": self.verified}


@dataclass
class _State:
    offset: int = 0
    etag: str | None = None
    hasher: MultiHasher | None = None
    full_fetches: int = 0
    synced: int = 0
    attempts: list = field(default_factory=list)


class _Cancelled(Exception):
    pass


def part_paths(staging: Path, rel: str) -> tuple[Path, Path, Path]:
    dest = staging / rel
    return dest, dest.with_name(dest.name + PART), dest.with_name(dest.name + SIDECAR)


def resumable_bytes(staging: Path, rf: RemoteFile) -> int:
    """Bytes of `rf` already in staging (a finished file or a matching partial)."""
    journal = load_journal(staging)
    if _journal_ok(staging, journal.get(rf.path), rf):
        return rf.size
    _dest, part, side = part_paths(staging, rf.path)
    try:
        meta = json.loads(side.read_text())
        if meta["identity"] == rf.identity():
            return _trusted_length(rf, meta, part.stat().st_size)
    except (OSError, ValueError, KeyError):
        pass
    return 0


def _trusted_length(rf: RemoteFile, meta: dict, size: int) -> int:
    size = min(size, rf.size)
    return size if rf.digests else min(size, int(meta.get("synced", 0)))


def load_journal(staging: Path) -> dict:
    try:
        return json.loads((staging / JOURNAL).read_text())
    except (OSError, ValueError):
        return {}


def _journal_ok(staging: Path, entry: dict | None, rf: RemoteFile) -> bool:
    if not entry or entry.get("identity") != rf.identity():
        return False
    try:
        st = (staging / rf.path).stat()
    except OSError:
        return False
    return st.st_size == rf.size and st.st_mtime_ns == entry["mtime_ns"]


class Transfer:
    """Fetch a list of files from one source into `staging`, `jobs` at a time."""

    def __init__(self, source, staging: Path, progress: Progress, *, jobs: int = 4,
                 retries: int = 8, retry_base: float = 0.5):
        self._source = source
        self._staging = staging
        self._progress = progress
        self._jobs = max(1, jobs)
        self._retries = retries
        self._retry_base = retry_base
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._journal = load_journal(staging)

    def record(self, rf: RemoteFile, result: FileResult) -> None:
        """Journal a file placed in staging by other means (reused from the published model)."""
        result.mtime_ns = (self._staging / rf.path).stat().st_mtime_ns
        with self._lock:
            self._journal[rf.path] = {"identity": rf.identity(), "digests": result.digests,
                                      "verified": result.verified, "mtime_ns": result.mtime_ns}
            _write_json(self._staging / JOURNAL, self._journal)

    def run(self, files: list[RemoteFile]) -> dict[str, FileResult]:
        results: dict[str, FileResult] = {}
        todo = []
        for rf in files:
            entry = self._journal.get(rf.path)
            if _journal_ok(self._staging, entry, rf):
                results[rf.path] = FileResult(rf.path, rf.size, entry["digests"],
                                              entry["verified"], entry["mtime_ns"])
                self._progress.add(rf.size, transferred=False)
                self._progress.file_done()
            else:
                todo.append(rf)
        if todo:
            log.info("fetching %d file(s), %d already complete in staging",
                     len(todo), len(files) - len(todo))
        # Largest first keeps the tail short.
        todo.sort(key=lambda f: f.size, reverse=True)
        with ThreadPoolExecutor(max_workers=self._jobs, thread_name_prefix="stage") as pool:
            futures = {pool.submit(self._fetch, rf): rf for rf in todo}
            done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.exception() for f in done):
                self._stop.set()
            wait(futures)
        errors = [f.exception() for f in futures if f.exception()]
        real = [e for e in errors if not isinstance(e, _Cancelled)]
        if real:
            raise real[0]
        for fut, rf in futures.items():
            results[rf.path] = fut.result()
        return results

    # -- one file ---------------------------------------------------------------------
    def _fetch(self, rf: RemoteFile) -> FileResult:
        if self._stop.is_set():  # another file failed: do not start new ones
            raise _Cancelled()
        dest, part, side = part_paths(self._staging, rf.path)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            adopted = self._source.adopt(rf, dest)
            if adopted is not None:
                result = FileResult(rf.path, rf.size, adopted, sorted(rf.digests))
                self._progress.add(rf.size, transferred=False)
            else:
                result = self._download(rf, dest, part, side)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientSpaceError(f"volume full while writing {rf.path}") from exc
            raise StageError(f"{rf.path}: {exc}") from exc
        self.record(rf, result)
        self._progress.file_done()
        return result

    def _download(self, rf: RemoteFile, dest: Path, part: Path, side: Path) -> FileResult:
        state = self._resume_state(rf, part, side)
        while True:
            try:
                retry_call(lambda: self._attempt(rf, part, side, state), retries=self._retries,
                           what=f"fetch {rf.path}", base=self._retry_base)
            except SourceChangedError as exc:
                if state.full_fetches > 0:
                    raise
                # The partial came from an earlier run and the source moved on since: its
                # bytes cannot be trusted, the current listing can. Start over once.
                log.warning("%s: %s; dropping the partial file and starting over", rf.path, exc)
                self._discard(part, state)
                state.etag = rf.etag
                self._save_side(rf, side, state)
                continue
            with open(part, "rb+") as f:
                os.fsync(f.fileno())
            actual = state.hasher.hexdigests()
            bad = mismatches(rf.digests, actual)
            if not bad:
                break
            self._discard(part, state)
            detail = ", ".join(f"{k} {actual[k]} != listed {rf.digests[k]}" for k in bad)
            if state.full_fetches > 2:
                raise SourceChangedError(
                    f"{rf.path}: downloaded bytes do not match the source's listing ({detail}); "
                    "the source changed during staging or serves corrupt data")
            log.warning("%s: digest mismatch (%s); fetching it again from byte 0", rf.path, detail)
        os.replace(part, dest)
        side.unlink(missing_ok=True)
        return FileResult(rf.path, rf.size, actual, sorted(rf.digests))

    def _resume_state(self, rf: RemoteFile, part: Path, side: Path) -> _State:
        state = _State(hasher=MultiHasher(rf.digests, rf.size))
        try:
            meta = json.loads(side.read_text())
            size = part.stat().st_size
        except (OSError, ValueError):
            meta, size = None, 0
        ok = meta and meta.get("identity") == rf.identity() and 0 < size <= rf.size
        size = _trusted_length(rf, meta, size) if ok else 0
        if size > 0:
            state.offset, state.etag, state.synced = size, meta.get("etag"), size
            state.hasher.update_from_file(part, size)
            self._progress.add(size, transferred=False)
            log.info("%s: resuming at byte %d of %d", rf.path, size, rf.size)
        else:
            part.unlink(missing_ok=True)
            state.full_fetches = 1
        state.etag = state.etag or rf.etag
        self._save_side(rf, side, state)
        return state

    @staticmethod
    def _save_side(rf: RemoteFile, side: Path, state: _State) -> None:
        _write_json(side, {"identity": rf.identity(), "etag": state.etag,
                           "synced": state.synced})

    def _discard(self, part: Path, state: _State) -> None:
        """Drop bad bytes; the next attempt starts at 0 with a fresh hasher."""
        part.unlink(missing_ok=True)
        self._progress.add(-state.offset, transferred=False)
        state.offset = state.synced = 0
        state.full_fetches += 1

    def _attempt(self, rf: RemoteFile, part: Path, side: Path, state: _State) -> None:
        if state.offset == 0:
            state.hasher = MultiHasher(rf.digests, rf.size)
        if state.offset >= rf.size:
            part.touch()
            return
        with self._source.open(rf, state.offset, state.etag) as stream:
            if stream.start != state.offset:  # the source ignored the range: start over
                self._progress.add(-state.offset, transferred=False)
                state.offset, state.hasher = 0, MultiHasher(rf.digests, rf.size)
            etag = getattr(stream, "etag", None)
            if etag and state.etag is None:
                state.etag = etag
                self._save_side(rf, side, state)
            with open(part, "r+b" if part.exists() else "wb") as out:
                out.seek(state.offset)
                out.truncate()
                for chunk in stream.chunks(CHUNK):
                    if self._stop.is_set():
                        raise _Cancelled()
                    if state.offset + len(chunk) > rf.size:
                        raise SourceChangedError(f"{rf.path}: source sent more than the listed "
                                                 f"{rf.size} bytes")
                    out.write(chunk)
                    state.hasher.update(chunk)
                    state.offset += len(chunk)
                    self._progress.add(len(chunk))
                    if not rf.digests and state.offset - state.synced >= CHECKPOINT:
                        out.flush()
                        os.fsync(out.fileno())
                        state.synced = state.offset
                        self._save_side(rf, side, state)
        if state.offset < rf.size:
            raise TransientError(f"{rf.path}: connection ended at byte {state.offset} "
                                 f"of {rf.size}")


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, sort_keys=True))
    os.replace(tmp, path)
