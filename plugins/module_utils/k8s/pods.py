# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Pods that waiting will not fix: the one place a wait on pods ends early, with the reason.

Every wait on pods (the stager Job's pod, the serving pods, ...) hands the pods it
listed to a ``PodFaults`` on each check. A pod whose container waits in
``ImagePullBackOff``, ``ErrImagePull``, ``InvalidImageName``, ``CrashLoopBackOff``,
``CreateContainerConfigError`` or ``CreateContainerError``, or that the scheduler
reports ``PodScheduled=False`` / ``Unschedulable``, ends the wait with
``OperationFailedError`` whose message carries the pod, the reason and the kubelet's or
scheduler's own message, e.g. ``pod ns/stage-m-x7k2p: ImagePullBackOff (container
stager): Back-off pulling image "..."; last pull error: ...``.

A reason ends the wait once it has held for its grace period on the wait's own
(monotonic) clock, so a moment a real cluster passes through on the way to Ready does
not: a pod pending while an old replica frees its GPUs, a container that crashed once
while its peer started. Defaults: ``Unschedulable`` 30 s, ``CrashLoopBackOff`` 20 s
(counted from the first crash until the pod is Ready), the others 10 s (the kubelet has
retried the pull by then). A pod that is gone or Ready is forgotten.

API
---
``stuck_reason(pod) -> (reason, message) | None``: what blocks the pod now.
``PodFaults(grace=None, clock=time.monotonic)``; ``.check(pods, what)`` raises
``OperationFailedError(reason=..., pod=...)``.
``PodWatch(client, namespace, selector, what, marker=None, faults=None)``: for a wait on
the pods of one selector: ``.check()`` lists and checks them (returns them);
``.reporting(progress)`` wraps a ``wait_for`` progress callback so that each report
(``wait_for`` calls it at its steady ``progress_every`` pace, never on every poll) also
carries the newest pod's last log line containing ``marker``, from the marker on (the
stager logs ``progress: 1.2 GiB / 9.8 GiB (12.2%), 48.0 MiB/s, ETA 183s, files 3/9``).
A log that cannot be read yet leaves the report as it was.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    GpuStackError,
    OperationFailedError,
)

UNSCHEDULABLE = "Unschedulable"
CRASH_LOOP = "CrashLoopBackOff"
PULL_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName")
STUCK_REASONS = (*PULL_REASONS, CRASH_LOOP, "CreateContainerConfigError",
                 "CreateContainerError")
DEFAULT_GRACE = {UNSCHEDULABLE: 30.0, CRASH_LOOP: 20.0}
OTHER_GRACE = 10.0


def _ref(pod: dict) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def stuck_reason(pod: dict) -> tuple[str, str] | None:
    """(reason, message) of what blocks the pod now, or None; the message starts with
    the reason, e.g. ``Unschedulable: 0/3 nodes are available: ...``."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return None
    for cond in status.get("conditions") or []:
        if (cond.get("type") == "PodScheduled" and cond.get("status") == "False"
                and cond.get("reason") == UNSCHEDULABLE):
            return UNSCHEDULABLE, f"{UNSCHEDULABLE}: {cond.get('message') or 'no node fits'}"
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_REASONS:
                message = waiting.get("message") or ""
                text = f"{waiting['reason']} (container {container.get('name', '?')})"
                if waiting["reason"] == CRASH_LOOP:
                    text += _last_exit(container)
                return waiting["reason"], f"{text}: {message}" if message else text
    return None


def _last_exit(container: dict) -> str:
    ended = (container.get("lastState") or {}).get("terminated") or {}
    if "exitCode" not in ended:
        return ""
    return (f", {container.get('restartCount', 0)} restarts, last exit code "
            f"{ended['exitCode']}" + (f" ({ended['reason']})" if ended.get("reason") else ""))


class PodFaults:
    """Remembers, across a wait's checks, since when each pod has been stuck."""

    def __init__(self, grace: dict | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.grace = {**DEFAULT_GRACE, **(grace or {})}
        self._clock = clock
        self._since: dict = {}  # (pod uid, "schedule" | "start") -> first seen stuck
        self._pull_error: dict = {}  # pod uid -> the last ErrImagePull message seen

    def check(self, pods: Iterable[dict], what: str) -> None:
        """Raise ``OperationFailedError`` for the first pod stuck past its grace."""
        now = self._clock()
        live = set()
        for pod in pods:
            uid = (pod.get("metadata") or {}).get("uid") or _ref(pod)
            live.add(uid)
            found = stuck_reason(pod)
            if _ready(pod):
                self._forget(uid)
            if found is None:
                self._since.pop((uid, "schedule"), None)
                continue
            reason, message = found
            phase = "schedule" if reason == UNSCHEDULABLE else "start"
            if phase == "start":
                self._since.pop((uid, "schedule"), None)
            since = self._since.setdefault((uid, phase), now)
            if reason == "ErrImagePull":
                self._pull_error[uid] = message
            elif reason == "ImagePullBackOff" and uid in self._pull_error:
                message += f"; last pull error: {self._pull_error[uid].split('): ', 1)[-1]}"
            if now - since >= self.grace.get(reason, OTHER_GRACE):
                raise OperationFailedError(
                    f"{what}: pod {_ref(pod)} cannot become ready: {message}",
                    reason=reason, pod=(pod.get("metadata") or {}).get("name"))
        for key in [k for k in self._since if k[0] not in live]:
            self._since.pop(key)
        for uid in [u for u in self._pull_error if u not in live]:
            self._pull_error.pop(uid)

    def _forget(self, uid: str) -> None:
        self._since.pop((uid, "start"), None)
        self._pull_error.pop(uid, None)


class PodWatch:
    """The pods of one selector during one wait: stuck ones end it, their log reports."""

    def __init__(self, client, namespace: str, selector: str, what: str,
                 marker: str | None = None, faults: PodFaults | None = None):
        self.client, self.ns, self.selector, self.what = client, namespace, selector, what
        self.marker = marker
        self.faults = faults or PodFaults()
        self.pods: list = []

    def check(self) -> list:
        self.pods = self.client.list("v1", "Pod", self.ns, label_selector=self.selector)
        self.faults.check(self.pods, self.what)
        return self.pods

    def last_line(self) -> str:
        """The newest pod's last log line containing the marker, from the marker on."""
        if not self.marker or not self.pods:
            return ""
        newest = max(self.pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))
        try:
            log = self.client.logs(newest["metadata"]["name"], self.ns)
        except GpuStackError:  # not started yet, or the API blinked: report without it
            return ""
        for line in reversed((log or "").splitlines()):
            if self.marker in line:
                return line[line.index(self.marker):].strip()
        return ""

    def reporting(self, progress: Callable | None) -> Callable | None:
        """``progress(status, elapsed)`` with the log line appended to ``status.progress``."""
        if progress is None or not self.marker:
            return progress

        def _report(status, elapsed):
            line = self.last_line()
            if line:
                text = f"{status.progress}; {line}" if status.progress else line
                status = dataclasses.replace(status, progress=text)
            progress(status, elapsed)

        return _report
