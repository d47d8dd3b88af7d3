"""Archive source: a tar (plain, gz, bz2, xz) or zip over HTTP(S), unpacked while streaming.

No temporary copy of the archive: tar members are written as the stream passes; a zip is
read in place through HTTP Range requests (central directory first, then each member).
Member paths are checked before anything is written: absolute paths, `..`, links that
leave the destination and special files are refused (UnsafeArchiveError).
Resume: finished members are journalled; a plain tar restarts at the first unfinished
member's byte offset, a zip re-reads only unfinished members, a compressed tar must be
re-streamed from byte 0 (members already on disk are skipped, not rewritten).
"""

from __future__ import annotations

import hashlib
import logging
import lzma
import os
import posixpath
import stat
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

from gpu_stack_runtime.stager import marker
from gpu_stack_runtime.stager.archive_io import RangeFile, Reader
from gpu_stack_runtime.stager.errors import (
    ConfigError,
    IntegrityError,
    SourceChangedError,
    TransientError,
    UnsafeArchiveError,
)
from gpu_stack_runtime.stager.model import Listing, RemoteFile, safe_relpath
from gpu_stack_runtime.stager.progress import Progress, human_bytes
from gpu_stack_runtime.stager.publish import StagingArea
from gpu_stack_runtime.stager.retry import retry_call
from gpu_stack_runtime.stager.sources._http import HttpClient, redact_url
from gpu_stack_runtime.stager.stage import (
    Options,
    Outcome,
    current_marker,
    decision_lock,
    stale_published,
)
from gpu_stack_runtime.stager.transfer import JOURNAL, FileResult, _write_json, load_journal

log = logging.getLogger("gpu_stack_runtime.stager")

_SUFFIXES = ((".tar.gz", "tar.gz"), (".tgz", "tar.gz"), (".tar.bz2", "tar.bz2"),
             (".tar.xz", "tar.xz"), (".tar", "tar"), (".zip", "zip"))
_TAR_MODES = {"tar": "r|", "tar.gz": "r|gz", "tar.bz2": "r|bz2", "tar.xz": "r|xz"}


class ArchiveSource:
    kind = "archive"

    def __init__(self, url: str, client: HttpClient, *, fmt: str = "auto",
                 archive_sha256: str | None = None, strip_components: int = 0,
                 unpacked_size: int | None = None, manifest: dict | None = None,
                 manifest_text: str | None = None, retries: int = 8):
        if fmt == "auto":
            path = url.split("?", 1)[0].lower()
            fmt = next((f for suffix, f in _SUFFIXES if path.endswith(suffix)), None)
            if fmt is None:
                raise ConfigError(f"cannot tell the archive format of {redact_url(url)}; "
                                  "pass --archive-format")
        if strip_components < 0:
            raise ConfigError("--strip-components must be >= 0")
        self.url, self.client, self.fmt = url, client, fmt
        self.archive_sha256 = archive_sha256.lower() if archive_sha256 else None
        self.strip = strip_components
        self.unpacked_size = int(unpacked_size) if unpacked_size else None
        self.manifest = manifest
        self._manifest_sha = (hashlib.sha256(manifest_text.encode()).hexdigest()
                              if manifest_text else None)
        self.retries = retries

    def describe(self) -> dict:
        return {"type": self.kind, "url": redact_url(self.url), "format": self.fmt,
                "archive_sha256": self.archive_sha256, "strip_components": self.strip,
                "manifest_sha256": self._manifest_sha}

    def identity(self) -> RemoteFile:
        size, etag = retry_call(lambda: self.client.head(self.url), retries=self.retries,
                                what=f"HEAD {redact_url(self.url)}")
        if size is None:
            raise ConfigError(f"{redact_url(self.url)}: the server sends no Content-Length")
        digests = {"sha256": self.archive_sha256} if self.archive_sha256 else {}
        return RemoteFile("archive", size, digests, etag, self.url)

    def target(self, name: str) -> str | None:
        """The member's path in the destination, or None if stripped away entirely."""
        if name.startswith("/") or ".." in name.replace("\\", "/").split("/"):
            raise UnsafeArchiveError(f"archive member {name!r}: absolute or '..' path refused")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if len(parts) <= self.strip:
            return None
        return safe_relpath("/".join(parts[self.strip:]))

    def close(self) -> None:
        self.client.close()


def link_target(rel: str, linkname: str) -> str:
    """Where a symlink at `rel` points, relative to the root; refused if it leaves it."""
    if linkname.startswith("/"):
        raise UnsafeArchiveError(f"symlink {rel!r} -> {linkname!r}: absolute target refused")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), linkname))
    if joined == ".." or joined.startswith("../"):
        raise UnsafeArchiveError(f"symlink {rel!r} -> {linkname!r} leaves the destination")
    return joined


def stage_archive(source: ArchiveSource, dest: Path, opts: Options) -> Outcome:
    area = StagingArea(dest)
    started = time.monotonic()
    archive = source.identity()
    with decision_lock(area, opts):
        return _stage_identified(source, area, archive, started, opts)


def _stage_identified(source: ArchiveSource, area: StagingArea, archive: RemoteFile,
                      started: float, opts: Options) -> Outcome:
    desc = source.describe()
    key = marker.source_key(desc, Listing([archive], None))
    doc = current_marker(area, opts)
    stale: list[str] = []
    if doc and doc.get("source_key") == key:
        stale = stale_published(area, doc, opts)
        if not stale:
            log.info("%s is already staged from this archive; nothing to do", area.dest)
            return Outcome(False, str(area.dest), "marker matches", 0, doc)
        log.warning("%d staged file(s) changed on disk; unpacking the archive again", len(stale))
    if opts.check:
        return Outcome(True, str(area.dest), "not staged", archive.size, None, stale)
    with area.locked():
        area.recover()
        journal = load_journal(area.staging)
        if journal.get("_archive") != archive.identity():
            journal = {"_archive": archive.identity()}  # a different archive: start clean
            area.prune(set(), set())
        area.staging.mkdir(parents=True, exist_ok=True)
        unpacker = _Unpacker(source, archive, area, journal, opts)
        results = unpacker.run()
        files = [RemoteFile(p, r.size, {}, None) for p, r in results.items()]
        doc = marker.build(desc, Listing(files, None), results, started, time.monotonic())
        doc["source_key"] = key
        doc["archive"] = {"size": archive.size, "etag": archive.etag,
                          "sha256_verified": unpacker.archive_verified, "links": unpacker.links}
        marker.write(area.staging, doc)
        (area.staging / JOURNAL).unlink(missing_ok=True)
        area.publish()
    log.info("published %s (%d files, %s)", area.dest, doc["file_count"],
             human_bytes(doc["total_bytes"]))
    return Outcome(True, str(area.dest), "staged", unpacker.progress.transferred_bytes, doc,
                   stale)


class _Unpacker:
    def __init__(self, source: ArchiveSource, archive: RemoteFile, area: StagingArea,
                 journal: dict, opts: Options):
        self.src, self.archive, self.area, self.journal, self.opts = (
            source, archive, area, journal, opts)
        self.root = area.staging
        self.links: dict[str, str] = {}
        self.archive_verified = False
        self.crc_failures: dict[str, int] = {}
        self.progress = Progress(archive.size, 0, opts.progress_interval)

    def run(self) -> dict[str, FileResult]:
        with self.progress:
            if self.src.fmt == "zip":
                self._zip()
            else:
                need = self.src.unpacked_size or self.archive.size
                if not self.src.unpacked_size and self.src.fmt != "tar":
                    log.warning("compressed tar without --unpacked-size: the free-space check "
                                "uses the archive size, a lower bound")
                self.area.check_space(need, self.opts.space_margin)
                retry_call(self._tar_pass, retries=self.opts.retries,
                           what=f"unpack {redact_url(self.src.url)}")
        log.info("%s", self.progress.summary())
        results = {p: FileResult(p, e["size"], e["digests"], e["verified"], e["mtime_ns"])
                   for p, e in self.journal.items() if not p.startswith("_")}
        if self.src.manifest is not None:
            missing = sorted(set(self.src.manifest) - set(results))
            if missing:
                raise IntegrityError(f"archive lacks files the manifest lists: {missing[:10]}")
        if not results:
            raise UnsafeArchiveError("the archive holds no regular files")
        return results

    # -- tar: one sequential pass -------------------------------------------------------
    def _tar_pass(self) -> None:
        resume = self.journal.get("_resume_offset", 0) if self.src.fmt == "tar" else 0
        stream = self.src.client.open_range(self.src.url, resume, size=self.archive.size,
                                            etag=self.archive.etag)
        with stream:
            if stream.start != resume:
                resume = 0
            reader = Reader(stream, self.progress, hash_all=(resume == 0))
            self.progress.add(resume, transferred=False)
            try:
                with tarfile.open(fileobj=reader, mode=_TAR_MODES[self.src.fmt]) as tf:
                    for member in tf:
                        self._tar_member(tf, member, resume)
            except (tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error,
                    lzma.LZMAError, OSError) as exc:
                raise SourceChangedError(f"{redact_url(self.src.url)}: not a valid "
                                         f"{self.src.fmt} archive: {exc}") from exc
            reader.drain()
        self._check_archive_digest(reader)

    def _tar_member(self, tf, member: tarfile.TarInfo, base: int) -> None:
        rel = self.src.target(member.name)
        if rel is None:
            return
        if member.isdir():
            self._mkdir(rel)
        elif member.issym():
            self._symlink(rel, link_target(rel, member.linkname), member.linkname)
        elif member.islnk():
            target = self.src.target(member.linkname)
            if target is None or target not in self.journal:
                raise UnsafeArchiveError(f"hard link {rel!r} -> {member.linkname!r} refused")
            self._place(rel)
            os.link(self.root / target, self.root / rel)
            self._record(rel, dict(self.journal[target]), None)
        elif member.isreg():
            end = base + member.offset_data + -(-member.size // 512) * 512
            if self._done(rel, member.size):
                return
            self._write(rel, member.size, tf.extractfile(member), end)
        else:
            raise UnsafeArchiveError(f"archive member {member.name!r}: special file refused")

    # -- zip: random access through Range requests ---------------------------------------
    def _zip(self) -> None:
        raw = RangeFile(self.src.client, self.src.url, self.archive.size, self.archive.etag)
        try:
            zf = retry_call(lambda: zipfile.ZipFile(raw), retries=self.opts.retries,
                            what="read the zip directory")
        except zipfile.BadZipFile as exc:
            raise SourceChangedError(f"{redact_url(self.src.url)}: not a zip: {exc}") from exc
        infos = [(i, self.src.target(i.filename)) for i in zf.infolist()]  # all checked first
        self.progress.total_bytes = sum(i.file_size for i, _rel in infos)
        need = sum(i.file_size for i, rel in infos if rel and not self._done(rel, i.file_size))
        self.area.check_space(need, self.opts.space_margin)
        for info, rel in infos:
            if rel is None:
                continue
            mode = info.external_attr >> 16
            if info.is_dir():
                self._mkdir(rel)
            elif stat.S_ISLNK(mode):
                name = zf.read(info).decode()
                self._symlink(rel, link_target(rel, name), name)
            elif self._done(rel, info.file_size):
                self.progress.add(info.file_size, transferred=False)
            else:
                retry_call(lambda i=info, r=rel: self._zip_member(zf, i, r),
                           retries=self.opts.retries, what=f"unpack {rel}")
        self.archive_verified = False  # zip: members are verified by their CRC32 instead

    def _zip_member(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, rel: str) -> None:
        try:
            with zf.open(info) as member:
                self._write(rel, info.file_size, member, None, count=True)
        except zipfile.BadZipFile as exc:  # CRC32 mismatch, bad header
            self.crc_failures[rel] = self.crc_failures.get(rel, 0) + 1
            if self.crc_failures[rel] == 1:  # maybe damaged on the way: read it once more
                log.warning("%s: %s; reading the member again", rel, exc)
                raise TransientError(f"{rel}: {exc}") from exc
            raise SourceChangedError(f"{rel}: corrupt zip member: {exc}") from exc

    # -- shared ---------------------------------------------------------------------------
    def _done(self, rel: str, size: int) -> bool:
        entry = self.journal.get(rel)
        if not entry:
            return False
        try:
            st = (self.root / rel).stat()
        except OSError:
            return False
        return st.st_size == size and st.st_mtime_ns == entry["mtime_ns"]

    def _place(self, rel: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        real_root = os.path.realpath(self.root)
        if os.path.commonpath([real_root, os.path.realpath(path.parent)]) != real_root:
            raise UnsafeArchiveError(f"archive member {rel!r} would be written outside the "
                                     "destination (through a link)")
        if path.is_symlink() or path.exists():
            path.unlink()
        return path

    def _mkdir(self, rel: str) -> None:
        self._place(rel + "/.keep").parent.mkdir(parents=True, exist_ok=True)

    def _symlink(self, rel: str, resolved: str, linkname: str) -> None:
        os.symlink(linkname, self._place(rel))
        self.links[rel] = resolved

    def _write(self, rel: str, size: int, fileobj, end: int | None, count=False) -> None:
        if self.src.manifest is not None and rel not in self.src.manifest:
            raise IntegrityError(f"archive member {rel!r} is not in the manifest")
        path = self._place(rel)
        part = path.with_name(path.name + ".part")
        h = hashlib.sha256()
        with open(part, "wb") as out:
            while block := fileobj.read(1 << 20):
                out.write(block)
                h.update(block)
                if count:
                    self.progress.add(len(block))
            os.fsync(out.fileno())
        if part.stat().st_size != size:
            raise TransientError(f"{rel}: unpacked {part.stat().st_size} of {size} bytes")
        digests, verified = {"sha256": h.hexdigest()}, []
        if self.src.manifest is not None:
            if digests["sha256"] != self.src.manifest[rel]["sha256"]:
                raise SourceChangedError(f"{rel}: sha256 {digests['sha256']} differs from the "
                                         "manifest")
            verified.append("manifest")
        os.replace(part, path)
        self._record(rel, {"size": size, "digests": digests, "verified": verified}, end)

    def _record(self, rel: str, entry: dict, end: int | None) -> None:
        entry["mtime_ns"] = (self.root / rel).stat().st_mtime_ns
        self.journal[rel] = entry
        if end is not None:
            self.journal["_resume_offset"] = end
        _write_json(self.root / JOURNAL, self.journal)
        self.progress.file_done()

    def _check_archive_digest(self, reader: Reader) -> None:
        if not self.src.archive_sha256 or not reader.hash_all:
            return
        actual = reader.hexdigest()
        if actual != self.src.archive_sha256:
            raise SourceChangedError(f"archive sha256 is {actual}, expected "
                                     f"{self.src.archive_sha256}")
        self.archive_verified = True
