"""Helpers of the process runtime: what a container's command and environment look like
to a local process, and how a container's processes are signalled.

- ``expand``: Kubernetes' ``$(VAR)`` references; ``map_path``: mount paths to the local
  directories; ``lab_path``: ``PATH`` with the lab's Python environment first;
  ``with_pod_site``: ``PYTHONPATH`` with the lab's ``pod_site`` first (its
  ``sitecustomize`` runs vLLM's server as vLLM on CPU can: see pod_site/sitecustomize.py).
- ``signal_container``: a container is the session its main process leads (the runtime
  starts it with ``start_new_session``); every process of that session is signalled,
  also those in process groups of their own (Ray's workers).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

POD_SITE = Path(__file__).resolve().parents[1] / "pod_site"
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, defined: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` references to the container's own variables (``$$`` is a
    literal ``$``; an undefined reference stays as written)."""

    def _sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return defined.get(match[1], match.group(0))

    return _VAR_REF.sub(_sub, value) if "$" in value else value


def map_path(value: str, mounts: dict[str, Path]) -> str:
    """A container path (or ``--opt=path``) as the local path, when under a mount."""
    prefix, sep, rest = value.partition("=") if value.startswith("-") else ("", "", value)
    for mount in sorted(mounts, key=len, reverse=True):
        if rest == mount or rest.startswith(mount.rstrip("/") + "/"):
            return f"{prefix}{sep}{mounts[mount]}{rest[len(mount.rstrip('/')):]}"
    return value


def lab_path() -> str:
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def with_pod_site(env: dict[str, str]) -> dict[str, str]:
    """env with the lab's pod_site first on PYTHONPATH (whatever the container set)."""
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(POD_SITE)]
    return env | {"PYTHONPATH": os.pathsep.join([str(POD_SITE), *rest])}


def wait_or_kill(procs: list[subprocess.Popen], deadline: float) -> None:
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        signal_container(proc, signal.SIGKILL)
        proc.wait(timeout=5)


def signal_container(proc: subprocess.Popen, sig: int) -> None:
    """Signal the container: every process of the session its main process leads (Ray
    puts its workers in process groups of their own, but in the same session)."""
    if proc.poll() is not None and os.path.exists(f"/proc/{proc.pid}"):
        # The leader is gone and its PID belongs to another process now: that process's
        # group and session are not this container's (PIDs wrap around on a busy machine).
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    for pid in _session_members(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _session_members(sid: int) -> list[int]:
    members = []
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:  # no procfs: the process group is all we reach
        return members
    for name in entries:
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()  # state ppid pgrp session
        except OSError:
            continue
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != b"Z":
            members.append(int(name))
    return members
