"""Progress in the Job log: bytes, rate and ETA at a steady interval."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("gpu_stack_runtime.stager")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


class Progress:
    """Thread-safe counters plus a reporter thread that logs every `interval` seconds."""

    def __init__(self, total_bytes: int, total_files: int, interval: float, clock=time.monotonic):
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self.done_bytes = 0
        self.transferred_bytes = 0
        self.done_files = 0
        self._start = clock()
        self._last = (self._start, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, n: int, *, transferred: bool = True) -> None:
        """Count `n` bytes as done; `transferred` is False for bytes found already on disk."""
        with self._lock:
            self.done_bytes += n
            if transferred:
                self.transferred_bytes += n

    def file_done(self) -> None:
        with self._lock:
            self.done_files += 1

    def line(self) -> str:
        """One progress line; the rate is measured over the last interval."""
        now = self._clock()
        with self._lock:
            done, sent, files = self.done_bytes, self.transferred_bytes, self.done_files
        last_t, last_sent = self._last
        self._last = (now, sent)
        rate = (sent - last_sent) / (now - last_t) if now > last_t else 0.0
        pct = 100.0 * done / self.total_bytes if self.total_bytes else 100.0
        left = self.total_bytes - done
        eta = f"{left / rate:.0f}s" if rate > 0 else "unknown"
        return (f"progress: {human_bytes(done)} / {human_bytes(self.total_bytes)} ({pct:.1f}%), "
                f"{human_bytes(rate)}/s, ETA {eta}, files {files}/{self.total_files}")

    def summary(self) -> str:
        elapsed = max(self._clock() - self._start, 1e-9)
        return (f"transferred {human_bytes(self.transferred_bytes)} in {elapsed:.1f}s "
                f"({human_bytes(self.transferred_bytes / elapsed)}/s), "
                f"{self.done_files}/{self.total_files} files")

    def __enter__(self):
        if self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="stage-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join()
        return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            log.info("%s", self.line())
