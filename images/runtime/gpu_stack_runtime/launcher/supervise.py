"""Run the launcher's children (Ray, the GPU wait, vLLM), forward signals, reap them.

The launcher is usually PID 1 of its container: it forwards SIGTERM/SIGINT to its
children (vLLM first, Ray last), reaps orphans re-parented to it, and asks the kernel
to SIGTERM every child should the launcher itself die (``PR_SET_PDEATHSIG``, which is
safe here because the launcher never starts threads: Ray's client runs in the GPU-wait
child, not in the launcher).

With ``adopt_orphans`` it also becomes a child subreaper when it is not PID 1
(``PR_SET_CHILD_SUBREAPER``), so that processes its children leave behind are
re-parented to it and stopped with the rest. Measured with Ray 2.60: after a graceful
``ray start --block`` shutdown, the dashboard and runtime-env agents of a node outlived
their raylet for minutes. In a container PID 1's exit ends them all; outside one (the
lab runs pods as local processes) only this clean-up does.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence

from gpu_stack_runtime.common.errors import WaitTimeout
from gpu_stack_runtime.common.wait import WaitStatus, wait_for
from gpu_stack_runtime.launcher.errors import EXIT_SIGNAL_BASE

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
ORPHAN_GRACE = 5.0  # left-overs get less time than the children we started ourselves


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _orphans_of(pid: int) -> list[int]:
    """Processes whose parent is pid (read from /proc), zombies excluded."""
    found = []
    for stat in os.scandir("/proc"):
        if not stat.name.isdigit():
            continue
        try:
            with open(f"/proc/{stat.name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.name))
    return found


def shell_exit_code(code: int) -> int:
    """A child's exit code as a shell reports it: 128 + N for death by signal N."""
    return EXIT_SIGNAL_BASE - code if code < 0 else code


class Supervisor:
    """Start named children and wait for the first of them to exit or for a signal."""

    def __init__(self, log: Callable[[str], None], adopt_orphans: bool = False,
                 poll_interval: float = 0.2):
        self._log = log
        self._reap_orphans = adopt_orphans or os.getpid() == 1
        if adopt_orphans and os.getpid() != 1:
            _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        self._poll = poll_interval
        self.children: dict[str, subprocess.Popen] = {}
        self.exit_codes: dict[str, int] = {}
        self.stop_signal: int | None = None

    # signals -----------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
            self._log(f"received {signal.Signals(signum).name}: stopping")

    # children ----------------------------------------------------------------
    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen:
        proc = subprocess.Popen(list(argv), env=dict(env), preexec_fn=_die_with_parent)
        self.children[name] = proc
        self._log(f"started {name} (pid {proc.pid})")
        return proc

    def running(self, name: str) -> bool:
        self._reap()
        return name in self.children and name not in self.exit_codes

    def _record(self, pid: int, status: int) -> None:
        for name, proc in self.children.items():
            if proc.pid == pid and name not in self.exit_codes:
                code = os.waitstatus_to_exitcode(status)
                proc.returncode = code  # reaped here: Popen must not wait for it again
                self.exit_codes[name] = code
                self._log(f"{name} (pid {pid}) exited with {shell_exit_code(code)}")

    def _reap(self) -> None:
        if self._reap_orphans:
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return
                if pid == 0:
                    return
                self._record(pid, status)
        for name, proc in list(self.children.items()):
            if name in self.exit_codes:
                continue
            try:
                pid, status = os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if pid:
                self._record(pid, status)

    def wait_first(self, names: Sequence[str], timeout: float | None = None) -> str | None:
        """Block until one of names has exited (return it) or a stop signal (return None).

        With a timeout, also return None when it expires.
        """
        exited: list[str] = []

        def _check() -> WaitStatus:
            self._reap()
            exited[:] = [name for name in names if name in self.exit_codes][:1]
            return WaitStatus(done=bool(exited) or self.stop_signal is not None)

        try:
            self._wait(_check, math.inf if timeout is None else timeout, "a child to exit")
        except WaitTimeout:
            return None
        return exited[0] if exited else None

    def _wait(self, check: Callable[[], WaitStatus], timeout: float, what: str) -> None:
        """The one wait helper, polling every ``poll_interval`` seconds."""
        wait_for(check, timeout=timeout, what=what, interval=self._poll, tolerate=())

    def stop(self, name: str, grace: float) -> None:
        """SIGTERM the child, SIGKILL it after grace seconds, and reap it."""
        proc = self.children.get(name)
        if proc is None or not self.running(name):
            return
        self._log(f"stopping {name} (pid {proc.pid})")
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)

        def gone() -> WaitStatus:
            return WaitStatus(done=not self.running(name))

        try:
            self._wait(gone, grace, f"{name} to exit")
        except WaitTimeout:
            self._log(f"{name} ignored SIGTERM for {grace:g} s: killing it")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            self._wait(gone, math.inf, f"{name} to die")

    def stop_all(self, order: Sequence[str], grace: float) -> None:
        """Stop the named children in order, then any orphan adopted meanwhile."""
        for name in order:
            self.stop(name, grace)
        if self._reap_orphans:
            self._stop_orphans(min(grace, ORPHAN_GRACE))

    def _stop_orphans(self, grace: float) -> None:
        orphans = _orphans_of(os.getpid())
        if not orphans:
            return
        self._log(f"stopping {len(orphans)} left-over process(es): {orphans}")

        def _none_left() -> WaitStatus:
            self._reap()
            return WaitStatus(done=not _orphans_of(os.getpid()))

        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            for pid in orphans:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            try:
                self._wait(_none_left, wait, "left-over processes to exit")
                return
            except WaitTimeout:
                orphans = _orphans_of(os.getpid())
