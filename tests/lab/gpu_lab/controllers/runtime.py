"""Container runtimes for the lab's kubelet, and the pod volume layout on local disk.

The kubelet hands each started pod to a ``PodRuntime``. ``FakeRuntime`` simulates
containers (long-running unless the pod's restartPolicy lets them finish). A later
runtime can run selected pods' commands as real local processes: register it with
``Kubelet.register_runtime(name, runtime)`` and mark pods with the annotation
``gpu-lab.llmops.io/runtime: <name>`` (or set ``Kubelet.runtime_selector``). It receives,
for every container, its volume mounts mapped to local directories (``pod_mounts``):
a PVC is its PersistentVolume's directory under ``$GPU_LAB_HOME/volumes/``, an emptyDir
and materialized configMap/secret volumes live under ``$GPU_LAB_HOME/k8s/pods/<uid>/``.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..apiserver import clock

ANNOTATION_RUNTIME = "gpu-lab.llmops.io/runtime"
ANNOTATION_RUN_SECONDS = "gpu-lab.llmops.io/run-seconds"
ANNOTATION_EXIT_CODE = "gpu-lab.llmops.io/exit-code"


@dataclass
class ContainerState:
    """What a runtime reports for one container."""

    running: bool = True
    exit_code: int | None = None
    started_at: str = field(default_factory=clock.now)
    finished_at: str | None = None
    ready: bool = True  # the runtime's own readiness (a process runtime may probe)
    started: bool = True  # the startup probe passed (or there is none)
    probed: bool = False  # ready/started come from real probes: no simulated delay


class PodRuntime(Protocol):
    """Runs one pod's containers. Called on the server's loop: must not block."""

    def start(self, pod: dict[str, Any], mounts: dict[str, dict[str, Path]]) -> None:
        """Start the containers; ``mounts`` maps container -> mountPath -> local dir."""

    def poll(self, pod: dict[str, Any]) -> dict[str, ContainerState]:
        """Current state of each started container, by name."""

    def stop(self, pod: dict[str, Any]) -> None:
        """Stop the containers (the pod is being deleted)."""

    def logs(self, pod: dict[str, Any], container: str) -> str:
        """The container's output so far."""


class FakeRuntime:
    """Simulated containers: Always-restart pods run forever; others finish.

    A pod whose restartPolicy is Never/OnFailure (a Job's) exits after
    ``gpu-lab.llmops.io/run-seconds`` (default 1, scaled by GPU_LAB_TIME_SCALE) with
    ``gpu-lab.llmops.io/exit-code`` (default 0).
    """

    def __init__(self, time_scale: float) -> None:
        self.time_scale = time_scale
        self._started: dict[str, tuple[float, str]] = {}

    def start(self, pod: dict[str, Any], mounts: dict[str, dict[str, Path]]) -> None:
        self._started[pod["metadata"]["uid"]] = (time.monotonic(), clock.now())

    def poll(self, pod: dict[str, Any]) -> dict[str, ContainerState]:
        uid = pod["metadata"]["uid"]
        if uid not in self._started:  # restored after a lab restart: keep it running
            self._started[uid] = (time.monotonic() - 3600, clock.now())
        began, started_at = self._started[uid]
        annotations = pod["metadata"].get("annotations") or {}
        finishes = pod["spec"].get("restartPolicy", "Always") != "Always"
        run_for = float(annotations.get(ANNOTATION_RUN_SECONDS, "1")) * self.time_scale
        done = finishes and time.monotonic() - began >= run_for
        code = int(annotations.get(ANNOTATION_EXIT_CODE, "0")) if done else None
        return {
            c["name"]: ContainerState(running=not done, exit_code=code, started_at=started_at,
                                      finished_at=clock.now() if done else None)
            for c in pod["spec"].get("containers") or []
        }

    def stop(self, pod: dict[str, Any]) -> None:
        self._started.pop(pod["metadata"]["uid"], None)

    def logs(self, pod: dict[str, Any], container: str) -> str:
        image = next((c.get("image", "") for c in pod["spec"].get("containers") or []
                      if c["name"] == container), "")
        return (f"gpu-lab: container {container} ({image}) of pod "
                f"{pod['metadata']['namespace']}/{pod['metadata']['name']} is simulated; "
                "it has no output\n")


def pod_dir(home: Path, pod: dict[str, Any]) -> Path:
    return home / "k8s" / "pods" / pod["metadata"]["uid"]


def volume_dirs(home: Path, pod: dict[str, Any], claims: dict[str, Path],
                sources: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Path]:
    """Each pod volume as a local directory (``claims``: claim name -> PV dir; ``sources``:
    ("configmaps"|"secrets", name) -> object, for materialising their keys as files)."""
    base = pod_dir(home, pod)
    out: dict[str, Path] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if claim in claims:
                out[name] = claims[claim]
        elif "emptyDir" in volume:
            out[name] = base / "empty-dir" / name
            out[name].mkdir(parents=True, exist_ok=True)
        elif "configMap" in volume or "secret" in volume:
            kind = "configmaps" if "configMap" in volume else "secrets"
            ref = volume.get("configMap") or volume.get("secret") or {}
            obj = sources.get((kind, ref.get("name") or ref.get("secretName") or ""))
            target = base / kind / name
            target.mkdir(parents=True, exist_ok=True)
            for key, value in ((obj or {}).get("data") or {}).items():
                data = base64.b64decode(value) if kind == "secrets" else str(value).encode()
                (target / key).write_bytes(data)
            out[name] = target
    return out


def pod_mounts(pod: dict[str, Any], volumes: dict[str, Path]) -> dict[str, dict[str, Path]]:
    """container name -> mountPath -> local directory (subPath honoured)."""
    mounts: dict[str, dict[str, Path]] = {}
    for container in pod["spec"].get("containers") or []:
        own = mounts.setdefault(container["name"], {})
        for mount in container.get("volumeMounts") or []:
            local = volumes.get(mount["name"])
            if local is not None:
                own[mount["mountPath"]] = local / mount["subPath"] if mount.get(
                    "subPath") else local
    return mounts
