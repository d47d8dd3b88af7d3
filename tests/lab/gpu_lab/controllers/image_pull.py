"""Images the lab's kubelet cannot pull, and the kubelet's pull back-off.

The lab pulls nothing: every image "pulls" after the pod's start delay. A real kubelet
cannot pull an image whose registry does not resolve, so the lab refuses exactly those:
an image whose registry host ends in ``.invalid`` (RFC 6761: that top-level domain
never resolves, anywhere), e.g. ``registry.invalid/team/stager:1.0``. Its pod stays
Pending with the container waiting in ``ErrImagePull`` (the pull error as message, a
``Failed`` event), then ``ImagePullBackOff`` (``Back-off pulling image "..."``, a
``BackOff`` event) until the next try: 10 s doubling up to 300 s, scaled by
GPU_LAB_TIME_SCALE, as the kubelet's image back-off does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UNRESOLVABLE_SUFFIX = ".invalid"
_SHOW_ERROR_SECONDS = 1.0  # ErrImagePull is shown this long before ImagePullBackOff


def registry_host(image: str) -> str:
    """The registry host of an image reference (docker.io when it names none)."""
    first, sep, _rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first.split(":", 1)[0]
    return "docker.io"


def pull_error(image: str) -> str | None:
    """Why the image cannot be pulled, in the words of CRI-O, or None."""
    host = registry_host(image)
    if not host.endswith(UNRESOLVABLE_SUFFIX):
        return None
    return (f"rpc error: code = Unknown desc = pinging container registry {host}: "
            f"Get \"https://{host}/v2/\": dial tcp: lookup {host}: no such host")


@dataclass
class Verdict:
    """What the kubelet shows for a pod whose image cannot be pulled."""

    reason: str
    message: str
    event: tuple[str, str]
    wait: float


@dataclass
class _Tries:
    count: int = 0
    last: float = 0.0
    retry_at: float = 0.0


class PullBackOff:
    """Per pod: the failed pulls so far and when the next one is due."""

    def __init__(self, scaled) -> None:
        self._scaled = scaled
        self._tries: dict[str, _Tries] = {}

    def check(self, pod: dict[str, Any], now: float) -> Verdict | None:
        """None when every image of the pod can be pulled; else what to show now."""
        containers = [*(pod["spec"].get("initContainers") or []),
                      *(pod["spec"].get("containers") or [])]
        failing = next(((c.get("image", ""), err) for c in containers
                        if (err := pull_error(c.get("image", ""))) is not None), None)
        if failing is None:
            return None
        image, error = failing
        tries = self._tries.setdefault(pod["metadata"]["uid"], _Tries())
        if tries.count == 0 or now >= tries.retry_at:
            tries.count += 1
            tries.last = now
            tries.retry_at = now + self._scaled(min(10 * 2 ** (tries.count - 1), 300))
            return Verdict("ErrImagePull", error,
                           ("Failed", f'Failed to pull image "{image}": {error}'),
                           min(self._scaled(_SHOW_ERROR_SECONDS), tries.retry_at - now))
        if now - tries.last < self._scaled(_SHOW_ERROR_SECONDS):
            return Verdict("ErrImagePull", error, ("", ""),
                           self._scaled(_SHOW_ERROR_SECONDS) - (now - tries.last))
        return Verdict("ImagePullBackOff", f'Back-off pulling image "{image}"',
                       ("BackOff", f'Back-off pulling image "{image}"'), tries.retry_at - now)

    def forget(self, uid: str) -> None:
        self._tries.pop(uid, None)
