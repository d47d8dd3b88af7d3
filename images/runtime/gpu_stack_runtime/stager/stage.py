"""One staging run for a file-list source: plan, no-op check, space, transfer, publish."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from gpu_stack_runtime.stager import marker
from gpu_stack_runtime.stager.errors import ConfigError, StageError
from gpu_stack_runtime.stager.model import Listing, RemoteFile, safe_relpath
from gpu_stack_runtime.stager.progress import Progress, human_bytes
from gpu_stack_runtime.stager.publish import StagingArea
from gpu_stack_runtime.stager.transfer import (
    JOURNAL,
    PART,
    SIDECAR,
    FileResult,
    Transfer,
    resumable_bytes,
)

log = logging.getLogger("gpu_stack_runtime.stager")


@dataclass
class Options:
    jobs: int = 4
    retries: int = 8
    retry_base: float = 0.5
    progress_interval: float = 10.0
    verify: bool = False
    check: bool = False
    replace_unmanaged: bool = False
    space_margin: int = 64 << 20
    lock_wait: float = 0.0  # seconds to wait for another stager of the same destination


@dataclass
class Outcome:
    changed: bool
    dest: str
    reason: str
    transfer_bytes: int = 0
    marker: dict | None = None
    stale_files: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"changed": self.changed, "dest": self.dest, "reason": self.reason,
                "transfer_bytes": self.transfer_bytes, "stale_files": self.stale_files,
                "marker": self.marker}


def current_marker(area: StagingArea, opts: Options) -> dict | None:
    """The published model's marker; refuse to replace a directory we did not stage."""
    if not area.dest.exists():
        return None
    if not area.dest.is_dir():
        raise ConfigError(f"{area.dest} exists and is not a directory")
    doc = marker.read(area.dest)
    if doc is None and any(area.dest.iterdir()) and not opts.replace_unmanaged:
        raise ConfigError(f"{area.dest} holds files that gpu-stack-stage did not stage; "
                          "remove them or pass --replace-unmanaged")
    return doc


def stale_published(area: StagingArea, doc: dict, opts: Options) -> list[str]:
    stale = set(marker.changed_files(area.dest, doc))
    if opts.verify:
        log.info("verifying every published file (--verify)")
        stale |= set(marker.corrupt_files(area.dest, doc))
    return sorted(stale)


def decision_lock(area: StagingArea, opts: Options):
    """The lock held from the decision (marker, stale files, uploads) to the publish, so a
    run that waited for another one of the same model sees what that one published. Taken
    after the source is listed: a source that cannot be listed writes nothing."""
    return contextlib.nullcontext() if opts.check else area.locked(wait=opts.lock_wait)


def stage(source, dest: Path, opts: Options) -> Outcome:
    area = StagingArea(dest)
    started = time.monotonic()
    listing = source.list()
    _check_listing(listing)
    with decision_lock(area, opts):
        return _stage_listed(source, area, listing, started, opts)


def _stage_listed(source, area: StagingArea, listing: Listing, started: float,
                  opts: Options) -> Outcome:
    desc = source.describe()
    key = marker.source_key(desc, listing)
    doc = current_marker(area, opts)
    stale: list[str] = []
    if doc and doc.get("source_key") == key:
        stale = stale_published(area, doc, opts)
        if not stale:
            log.info("%s is already staged from this source (%d files, %s); nothing to do",
                     area.dest, doc["file_count"], human_bytes(doc["total_bytes"]))
            return Outcome(False, str(area.dest), "marker matches", 0, doc)
        log.warning("%d staged file(s) changed on disk, fetching them again: %s",
                    len(stale), ", ".join(stale[:10]))
    reuse = _reusable(area, doc, listing, set(stale))
    left = {f.path: f.size - resumable_bytes(area.staging, f)
            for f in listing.files if f.path not in reuse}
    source.preflight([f for f in listing.files if left.get(f.path, 0) > 0])
    pending_bytes = sum(left.values())
    need = pending_bytes if source.needs_space else 0
    reason = "stale files" if stale else ("source changed" if doc else "not staged")
    if opts.check:
        return Outcome(True, str(area.dest), reason, pending_bytes, None, stale)
    with area.locked():
        area.recover()
        area.check_space(need, opts.space_margin)
        area.staging.mkdir(parents=True, exist_ok=True)
        keep = {f.path for f in listing.files}
        area.prune(keep, {p + s for p in keep for s in (PART, SIDECAR)} | {JOURNAL})
        progress = Progress(listing.total_bytes, len(listing.files), opts.progress_interval)
        engine = Transfer(source, area.staging, progress, jobs=opts.jobs, retries=opts.retries,
                          retry_base=opts.retry_base)
        for rf in listing.files:
            if rf.path in reuse:
                area.link_from_published(rf.path)
                entry = reuse[rf.path]
                engine.record(rf, FileResult(rf.path, rf.size, entry["digests"], entry["verified"]))
        log.info("staging %d files (%s) into %s", len(listing.files),
                 human_bytes(listing.total_bytes), area.staging)
        with progress:
            results = engine.run(listing.files)
        log.info("%s", progress.summary())
        doc = marker.build(desc, listing, results, started, time.monotonic())
        marker.write(area.staging, doc)
        (area.staging / JOURNAL).unlink(missing_ok=True)
        area.publish()
    log.info("published %s (%d files, %s)", area.dest, doc["file_count"],
             human_bytes(doc["total_bytes"]))
    return Outcome(True, str(area.dest), reason, progress.transferred_bytes, doc, stale)


def _check_listing(listing: Listing) -> None:
    if not listing.files:
        raise StageError("the source lists no files to stage")
    seen: set[str] = set()
    for rf in listing.files:
        safe_relpath(rf.path)
        if rf.path in seen:
            raise StageError(f"the source lists {rf.path!r} twice")
        seen.add(rf.path)
    reserved = {marker.MARKER, JOURNAL}
    for path in seen:
        if path in reserved or (path.endswith((PART, SIDECAR)) and path.rsplit(".", 1)[0] in seen):
            raise StageError(f"the source file name {path!r} collides with the stager's own files")
        parent = path.rpartition("/")[0]
        while parent:
            if parent in seen:
                raise StageError(f"{parent!r} is listed both as a file and as a directory")
            parent = parent.rpartition("/")[0]


def _reusable(area: StagingArea, doc: dict | None, listing: Listing,
              stale: set[str]) -> dict[str, dict]:
    """Published files identical to what the source lists now: linked instead of fetched."""
    if not doc:
        return {}
    entries = {e["path"]: e for e in doc.get("files", [])}
    changed = set(marker.changed_files(area.dest, doc)) | stale
    reuse = {}
    for rf in listing.files:
        entry = entries.get(rf.path)
        if entry is None or rf.path in changed or not _same_content(rf, entry):
            continue
        reuse[rf.path] = entry
    return reuse


def _same_content(rf: RemoteFile, entry: dict) -> bool:
    if entry["size"] != rf.size:
        return False
    if rf.digests:
        have = entry.get("digests", {})
        return all(have.get(k) == v for k, v in rf.digests.items())
    return rf.etag is not None and entry.get("etag") == rf.etag
