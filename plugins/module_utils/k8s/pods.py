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
``OperationFailedError(reason=..., pod=...)``, ``.watch(client, namespace, selector,
what)`` returns a callable that lists the pods and checks them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
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

    def watch(self, client, namespace: str, selector: str, what: str) -> Callable[[], list]:
        """A callable for a wait's check: lists the selected pods, checks them, returns them."""

        def _check() -> list:
            pods = client.list("v1", "Pod", namespace, label_selector=selector)
            self.check(pods, what)
            return pods

        return _check
