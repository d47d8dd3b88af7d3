"""A kubelet runtime that runs a pod's containers as real local processes.

Which pods: those whose containers all use one of the collection's images
(``PROCESS_IMAGES``: the runtime image with the stager and launcher, the Ray/vLLM image;
override with ``GPU_LAB_PROCESS_IMAGES``, comma separated) and give a ``command``.
Nothing in the pod needs to know about the lab: the same manifests run on a real cluster.

How a container becomes a process:
- the command (``command`` + ``args``) runs with the lab's Python environment first on
  ``PATH``, so ``gpu-stack-stage``, ``gpu-stack-launch``, ``ray``, ``python`` resolve to
  the lab's own installs;
- paths: the container sees its volumes at their ``mountPath``; the process cannot, so
  every argument and environment value that is a mount path or lies below one (also
  after ``--opt=``) is rewritten to the local directory the kubelet mapped it to
  (``pod_mounts``), longest mount path first. ``workingDir`` likewise;
- env: ``value``, ``secretKeyRef``, ``configMapKeyRef`` and ``fieldRef``
  (``metadata.name``, ``metadata.namespace``, ``status.podIP``, ``spec.nodeName``);
- output goes to a log file per container, served as ``pods/log``; the exit code is the
  container's; stop sends SIGTERM to the process group and SIGKILL after the pod's
  grace period.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..apiserver import clock
from .runtime import ContainerState, pod_dir

PROCESS_IMAGES = ("gpu-stack-runtime", "ray-vllm")


def process_images() -> tuple[str, ...]:
    value = os.environ.get("GPU_LAB_PROCESS_IMAGES")
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else PROCESS_IMAGES


def wants_process(pod: dict[str, Any]) -> bool:
    """A pod of the collection's images whose containers say what to run (the lab cannot
    know an image's entrypoint: a container without ``command`` stays simulated)."""
    images = process_images()
    containers = pod["spec"].get("containers") or []
    return bool(containers) and all(
        any(i in (c.get("image") or "") for i in images) and c.get("command")
        for c in containers)


def map_path(value: str, mounts: dict[str, Path]) -> str:
    """A container path (or ``--opt=path``) as the local path, when under a mount."""
    prefix, sep, rest = value.partition("=") if value.startswith("-") else ("", "", value)
    for mount in sorted(mounts, key=len, reverse=True):
        if rest == mount or rest.startswith(mount.rstrip("/") + "/"):
            return f"{prefix}{sep}{mounts[mount]}{rest[len(mount.rstrip('/')):]}"
    return value


def lab_path() -> str:
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


class ProcessRuntime:
    """PodRuntime running containers as local processes (see the module docstring)."""

    def __init__(self, home: Path, lookup: Callable[..., dict | None]) -> None:
        self.home = home
        self.lookup = lookup  # (group, plural, namespace, name) -> object or None
        self._procs: dict[str, dict[str, tuple[subprocess.Popen, Path, str]]] = {}
        self._exits: dict[str, dict[str, tuple[int, str]]] = {}
        self.mounts: dict[str, dict[str, dict[str, Path]]] = {}

    # --- env ------------------------------------------------------------------------------
    def _env_value(self, pod: dict[str, Any], item: dict[str, Any]) -> str | None:
        if "value" in item:
            return str(item["value"])
        source = item.get("valueFrom") or {}
        ns = pod["metadata"]["namespace"]
        for key, plural in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            ref = source.get(key)
            if ref:
                obj = self.lookup("", plural, ns, ref.get("name", "")) or {}
                raw = (obj.get("data") or {}).get(ref.get("key", ""))
                if raw is None:
                    return None
                return base64.b64decode(raw).decode() if plural == "secrets" else str(raw)
        field = (source.get("fieldRef") or {}).get("fieldPath", "")
        values = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": ns,
                  "status.podIP": (pod.get("status") or {}).get("podIP", "127.0.0.1"),
                  "spec.nodeName": pod["spec"].get("nodeName", "")}
        return values.get(field)

    def environment(self, pod: dict[str, Any], container: dict[str, Any],
                    mounts: dict[str, Path]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        env["PATH"] = lab_path()
        env["HOSTNAME"] = pod["metadata"]["name"]
        for item in container.get("env") or []:
            value = self._env_value(pod, item)
            if value is not None:
                env[item["name"]] = map_path(value, mounts)
        return env

    # --- PodRuntime -----------------------------------------------------------------------
    def start(self, pod: dict[str, Any], mounts: dict[str, dict[str, Path]]) -> None:
        uid = pod["metadata"]["uid"]
        base = pod_dir(self.home, pod)
        base.mkdir(parents=True, exist_ok=True)
        self.mounts[uid] = mounts
        procs = self._procs.setdefault(uid, {})
        for container in pod["spec"].get("containers") or []:
            name = container["name"]
            own = mounts.get(name, {})
            argv = [map_path(a, own) for a in (container.get("command") or [])
                    + (container.get("args") or [])]
            log_path = base / f"{name}.log"
            if not argv:
                log_path.write_text("gpu-lab: container without command; nothing to run\n")
                self._exits.setdefault(uid, {})[name] = (0, clock.now())
                continue
            cwd = map_path(container.get("workingDir") or "", own) or str(base)
            Path(cwd).mkdir(parents=True, exist_ok=True)
            with log_path.open("ab") as log:
                try:
                    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=cwd,
                                            env=self.environment(pod, container, own),
                                            start_new_session=True)
                except OSError as exc:
                    log.write(f"gpu-lab: cannot start {argv[0]}: {exc}\n".encode())
                    self._exits.setdefault(uid, {})[name] = (127, clock.now())
                    continue
            procs[name] = (proc, log_path, clock.now())

    def poll(self, pod: dict[str, Any]) -> dict[str, ContainerState]:
        uid = pod["metadata"]["uid"]
        states: dict[str, ContainerState] = {}
        exits = self._exits.setdefault(uid, {})
        for container in pod["spec"].get("containers") or []:
            name = container["name"]
            if name in exits:
                code, finished = exits[name]
                states[name] = ContainerState(running=False, exit_code=code, finished_at=finished)
                continue
            entry = self._procs.get(uid, {}).get(name)
            if entry is None:  # restored after a lab restart: the process is gone
                states[name] = ContainerState(running=False, exit_code=137,
                                              finished_at=clock.now())
                continue
            proc, _log, started = entry
            code = proc.poll()
            if code is None:
                states[name] = ContainerState(running=True, started_at=started)
            else:
                exits[name] = (code if code >= 0 else 128 - code, clock.now())
                states[name] = ContainerState(running=False, exit_code=exits[name][0],
                                              started_at=started, finished_at=exits[name][1])
        return states

    def stop(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
        procs = self._procs.pop(uid, {})
        for proc, _log, _started in procs.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + min(grace, 10.0)
        for proc, _log, _started in procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
        self._exits.pop(uid, None)
        self.mounts.pop(uid, None)

    def logs(self, pod: dict[str, Any], container: str) -> str:
        path = pod_dir(self.home, pod) / f"{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def exec(self, request: Any, pod: dict[str, Any]) -> Any:
        from .exec_ws import serve_exec

        return await serve_exec(request, pod, self.mounts.get(pod["metadata"]["uid"], {}))


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
