"""The staging area beside the destination, its lock, and the atomic publish.

Layout on the volume, for a destination `<parent>/<name>`:
  <parent>/<name>/                              the published model (+ marker)
  <parent>/.gpu-stack-staging/<name>/           files being staged (never visible at <name>)
  <parent>/.gpu-stack-staging/<name>.upload/    uploads for the local source
  <parent>/.gpu-stack-staging/<name>.lock       one stager at a time
  <parent>/.gpu-stack-staging/<name>.old        the previous model during a swap
Everything lives on the same filesystem, so publishing is a rename.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import time
from pathlib import Path

from gpu_stack_runtime.common.contract import STAGING_AREA, UPLOAD_SUFFIX
from gpu_stack_runtime.stager.errors import BusyError, InsufficientSpaceError
from gpu_stack_runtime.stager.progress import human_bytes

log = logging.getLogger("gpu_stack_runtime.stager")

AREA = STAGING_AREA
_RENAME_EXCHANGE = 2
_HELD: set[str] = set()  # lock files this process holds
_AT_FDCWD = -100


class StagingArea:
    def __init__(self, dest: Path):
        self.dest = Path(os.path.abspath(dest))
        self.root = self.dest.parent / AREA
        self.staging = self.root / self.dest.name
        self.upload_dir = self.root / f"{self.dest.name}{UPLOAD_SUFFIX}"
        self.old = self.root / f"{self.dest.name}.old"
        self._lock_path = self.root / f"{self.dest.name}.lock"

    @contextlib.contextmanager
    def locked(self, wait: float = 0.0, poll: float = 0.5):
        """Hold an exclusive POSIX lock (works on NFSv4) for the whole run.

        With ``wait`` > 0 another stager's lock is waited for (up to ``wait`` seconds)
        instead of refused at once: a second run of the same model then finds the first
        one's result. Reentrant within the process (POSIX locks are per process, and
        closing a second descriptor would drop the first one's lock)."""
        if str(self._lock_path) in _HELD:
            yield self
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _acquire(fd, self._lock_path, self.dest, wait, poll)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _HELD.add(str(self._lock_path))
            try:
                yield self
            finally:
                _HELD.discard(str(self._lock_path))
        finally:
            os.close(fd)

    def recover(self) -> None:
        """Finish a swap that a previous run was killed in the middle of."""
        if not self.old.exists():
            return
        if self.dest.exists():
            shutil.rmtree(self.old)
        else:
            log.warning("restoring the previous model from %s (interrupted swap)", self.old)
            os.rename(self.old, self.dest)

    def check_space(self, need: int, margin: int) -> None:
        """Refuse before the transfer starts if the volume cannot hold `need` more bytes."""
        probe = self.root if self.root.exists() else self.dest.parent
        st = os.statvfs(probe)
        free = st.f_bavail * st.f_frsize
        if need + margin > free:
            raise InsufficientSpaceError(
                f"{probe} has {human_bytes(free)} free; staging needs {human_bytes(need)} "
                f"more (+{human_bytes(margin)} margin)")
        log.info("free space: %s available, %s needed", human_bytes(free), human_bytes(need))

    def prune(self, keep: set[str], keep_names: set[str]) -> None:
        """Remove files in staging that the plan does not list (left from another version)."""
        if not self.staging.exists():
            return
        for dirpath, dirnames, filenames in os.walk(self.staging, topdown=False):
            for name in filenames:
                full = Path(dirpath, name)
                rel = full.relative_to(self.staging).as_posix()
                if rel not in keep and rel not in keep_names:
                    full.unlink()
            for name in dirnames:
                full = Path(dirpath, name)
                if full.is_symlink():
                    continue
                with contextlib.suppress(OSError):
                    full.rmdir()  # only if empty

    def link_from_published(self, rel: str) -> None:
        """Reuse a verified file of the published model (hard link, else copy)."""
        src, dst = self.dest / rel, self.staging / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    def publish(self) -> None:
        """Make the staging dir the destination in one step; the old model is removed after."""
        _fsync_tree(self.staging)
        if not self.dest.exists():
            os.rename(self.staging, self.dest)
        elif _exchange(self.staging, self.dest):
            shutil.rmtree(self.staging)
        else:
            # No atomic exchange (NFS): two renames; recover() completes an interrupted one.
            os.rename(self.dest, self.old)
            os.rename(self.staging, self.dest)
            shutil.rmtree(self.old)
        _fsync_dir(self.dest.parent)
        _fsync_dir(self.root)


def _exchange(a: Path, b: Path) -> bool:
    """Linux renameat2(RENAME_EXCHANGE): swap two paths atomically, if supported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, _files in os.walk(root):
        _fsync_dir(Path(dirpath))


def _acquire(fd: int, path: Path, dest: Path, wait: float, poll: float) -> None:
    deadline = time.monotonic() + wait
    announced = False
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise BusyError(f"another stager is working on {dest} "
                                f"(lock {path} is held)") from exc
        if not announced:
            log.info("another stager is working on %s; waiting up to %.0fs for it", dest, wait)
            announced = True
        time.sleep(poll)
