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
- ``$(VAR)`` in command, args and env values: the container's own variables, as
  Kubernetes expands them (``$$`` escapes);
- env: ``value``, ``secretKeyRef``, ``configMapKeyRef`` and ``fieldRef``
  (``metadata.name``, ``metadata.namespace``, ``status.podIP``, ``status.podIPs``,
  ``status.hostIP``, ``spec.nodeName``, ``spec.serviceAccountName``);
- network (pod_network.py): the pod IP is a loopback address of its own, set by the
  kubelet before start; ``0.0.0.0`` becomes the pod IP and Service DNS names the IP of a
  pod they select, in arguments and environment values (``unresolved`` names the
  Services that have no such pod yet: the kubelet waits);
- probes (probes.py): startup, readiness and liveness probes run for real against the
  pod IP; ``poll`` reports their readiness, and a probe that gives up kills the
  container (SIGTERM, SIGKILL after the grace period) so the kubelet restarts it;
- each container start gets a fresh, private ``TMPDIR`` (removed when it stops);
- ``PYTHONPATH`` starts with the lab's ``pod_site`` (``with_pod_site``): its
  ``sitecustomize`` lets vLLM's server run on this CPU machine with the Ray executor,
  TP and PP the production launcher passes (see ``gpu_lab/pod_site/sitecustomize.py``);
- output goes to a log file per container, served as ``pods/log``; the exit code is the
  container's; stop sends SIGTERM to the process group and SIGKILL after the pod's
  grace period.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..apiserver import clock
from .pod_network import ServiceResolver, Target, rewrite, rewrite_env
from .probes import PodProber
from .process_util import (
    expand,
    lab_path,
    map_path,
    signal_container,
    wait_or_kill,
    with_pod_site,
)
from .runtime import ContainerState, pod_dir

PROCESS_IMAGES = ("gpu-stack-runtime", "ray-vllm", "llm-gateway")
# Images whose commands come from a venv of their own (relative to the repository, made
# by tests/bootstrap.sh), first on PATH before the lab's: LiteLLM cannot share the lab's.
IMAGE_VENVS = {"llm-gateway": ".venv-gateway"}
_REPO = Path(__file__).resolve().parents[4]


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


class ProcessRuntime:
    """PodRuntime running containers as local processes (see the module docstring)."""

    loopback_network = True  # the kubelet gives these pods loopback IPs (pod_network.py)

    def __init__(self, home: Path, lookup: Callable[..., dict | None],
                 list_: Callable[..., list[dict]] | None = None, time_scale: float = 1.0,
                 probe_tick: float = 1.0,
                 on_change: Callable[[], None] | None = None,
                 on_event: Callable[[dict, str, str, str], None] | None = None) -> None:
        self.home = home
        self.lookup = lookup  # (group, plural, namespace, name) -> object or None
        self.resolver = ServiceResolver(lookup, list_ or (lambda *a: []))
        self.time_scale, self.probe_tick = time_scale, probe_tick
        self.on_change = on_change or (lambda: None)  # a probe result changed
        self.on_event = on_event or (lambda pod, reason, message, kind: None)
        self._procs: dict[str, dict[str, tuple[subprocess.Popen, Path, str]]] = {}
        self._exits: dict[str, dict[str, tuple[int, str]]] = {}
        self._probers: dict[str, PodProber] = {}
        self._ending: set[subprocess.Popen] = set()  # stopped, not yet exited
        self._tmp_base: Path | None = None
        self._tmps: dict[str, list[Path]] = {}
        self._serial = itertools.count()
        self.exit_notices = True  # False: the kubelet must poll for exits
        self._closing = False
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
        status = pod.get("status") or {}
        ip = status.get("podIP", "127.0.0.1")
        values = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": ns,
                  "metadata.uid": pod["metadata"].get("uid", ""),
                  "status.podIP": ip, "status.podIPs": ip,
                  "status.hostIP": status.get("hostIP", "127.0.0.1"),
                  "spec.nodeName": pod["spec"].get("nodeName", ""),
                  "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "")}
        return values.get(field)

    def container_env(self, pod: dict[str, Any], container: dict[str, Any],
                      mounts: dict[str, Path],
                      targets: dict[tuple[str, str], Target] | None = None) -> dict[str, str]:
        """The variables the container defines, as its processes see them."""
        ip = (pod.get("status") or {}).get("podIP", "127.0.0.1")
        defined: dict[str, str] = {}
        for item in container.get("env") or []:
            value = self._env_value(pod, item)
            if value is not None:
                value = expand(value, defined) if "value" in item else value
                defined[item["name"]] = rewrite_env(map_path(value, mounts), ip, targets or {})
        return defined

    @staticmethod
    def _base_env(pod: dict[str, Any]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        images = " ".join(c.get("image") or "" for c in pod["spec"].get("containers") or [])
        own = [str(_REPO / venv / "bin") for image, venv in IMAGE_VENVS.items() if image in images]
        env["PATH"] = os.pathsep.join([*own, lab_path()])
        env["HOSTNAME"] = pod["metadata"]["name"]
        return env

    def environment(self, pod: dict[str, Any], container: dict[str, Any],
                    mounts: dict[str, Path],
                    targets: dict[tuple[str, str], Target] | None = None) -> dict[str, str]:
        return with_pod_site(self._base_env(pod)
                             | self.container_env(pod, container, mounts, targets))

    # --- network --------------------------------------------------------------------------
    def _texts(self, pod: dict[str, Any]) -> list[str]:
        """Every argument and environment value of the pod's containers, ``$(VAR)``
        references expanded (a Service name may be made of variables, as KServe's
        workers' ``$(HEAD_SVC).$(POD_NAMESPACE).svc``)."""
        texts: list[str] = []
        for container in pod["spec"].get("containers") or []:
            values = {item["name"]: v for item in container.get("env") or []
                      if (v := self._env_value(pod, item)) is not None}
            texts += [expand(str(a), values) for a in (container.get("command") or [])
                      + (container.get("args") or [])]
            texts += [expand(v, values) for v in values.values()]
        return texts

    def unresolved(self, pod: dict[str, Any]) -> list[str]:
        """The Service names the pod uses that no running pod stands for yet."""
        return self.resolver.resolve(pod, self._texts(pod))[1]

    # --- PodRuntime -----------------------------------------------------------------------
    def start(self, pod: dict[str, Any], mounts: dict[str, dict[str, Path]]) -> None:
        uid = pod["metadata"]["uid"]
        base = pod_dir(self.home, pod)
        base.mkdir(parents=True, exist_ok=True)
        self.mounts[uid] = mounts
        procs = self._procs.setdefault(uid, {})
        ip = (pod.get("status") or {}).get("podIP", "127.0.0.1")
        targets = self.resolver.resolve(pod, self._texts(pod))[0]
        for container in pod["spec"].get("containers") or []:
            name = container["name"]
            own = mounts.get(name, {})
            defined = self.container_env(pod, container, own, targets)
            argv = [rewrite(map_path(expand(str(a), defined), own), ip, targets) for a in
                    (container.get("command") or []) + (container.get("args") or [])]
            log_path = base / f"{name}.log"
            if not argv:
                log_path.write_text("gpu-lab: container without command; nothing to run\n")
                self._exits.setdefault(uid, {})[name] = (0, clock.now())
                continue
            cwd = map_path(container.get("workingDir") or "", own) or str(base)
            Path(cwd).mkdir(parents=True, exist_ok=True)
            env = with_pod_site(self._base_env(pod) | {"TMPDIR": str(self._fresh_tmp(uid))}
                                | defined)
            with log_path.open("ab") as log:
                try:
                    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                            start_new_session=True)
                except OSError as exc:
                    log.write(f"gpu-lab: cannot start {argv[0]}: {exc}\n".encode())
                    self._exits.setdefault(uid, {})[name] = (127, clock.now())
                    continue
            procs[name] = (proc, log_path, clock.now())
            self._notify_exit(proc)
        self._start_probes(pod, ip)

    def _fresh_tmp(self, uid: str) -> Path:
        """A container's own, empty temp dir for each start (TMPDIR), as a container's
        /tmp is: Ray keeps its session and ``ray_current_cluster`` there, and would
        refuse to restart a head that finds its previous run's address. Short paths
        (Ray's AF_UNIX sockets live below it): /tmp/glXXXXXXXX/<uid8>-<n>."""
        if self._tmp_base is None:
            self._tmp_base = Path(tempfile.mkdtemp(
                prefix="gl", dir="/tmp" if Path("/tmp").is_dir() else None))
        path = self._tmp_base / f"{uid[:8]}-{next(self._serial)}"
        path.mkdir(mode=0o700)
        self._tmps.setdefault(uid, []).append(path)
        return path

    def _drop_tmps(self, uid: str) -> Callable[[], None]:
        paths = self._tmps.pop(uid, [])

        def drop() -> None:
            for path in paths:
                shutil.rmtree(path, ignore_errors=True)

        return drop

    def _notify_exit(self, proc: subprocess.Popen) -> None:
        """Wake the kubelet when the process exits (a pidfd on the server's loop; where
        there is none, the kubelet polls process pods every second)."""
        try:
            loop = asyncio.get_running_loop()
            fd = os.pidfd_open(proc.pid)
        except (RuntimeError, AttributeError, OSError):
            self.exit_notices = False
            return

        def exited() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self.on_change()

        loop.add_reader(fd, exited)

    def _start_probes(self, pod: dict[str, Any], ip: str) -> None:
        uid = pod["metadata"]["uid"]
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not on the server's loop (a unit test): no probes
            return
        ref = {k: pod[k] for k in ("apiVersion", "kind") if k in pod} | {
            "metadata": {k: pod["metadata"].get(k) for k in ("name", "namespace", "uid")}}

        def alive(name: str) -> bool:
            entry = self._procs.get(uid, {}).get(name)
            return entry is not None and entry[0].poll() is None

        def kill(name: str, message: str) -> None:
            self.on_event(ref, "Killing", message, "Normal")
            self._terminate(uid, float(pod["spec"].get("terminationGracePeriodSeconds", 30)))

        self._probers[uid] = PodProber(
            [c for c in pod["spec"].get("containers") or [] if c["name"] in self._procs[uid]],
            ip, self.time_scale, self.probe_tick, alive, self.on_change,
            lambda reason, message: self.on_event(ref, reason, message, "Warning"), kill)

    def _terminate(self, uid: str, grace: float) -> None:
        """SIGTERM the pod's processes now, SIGKILL those left after the grace period
        (without waiting: the kubelet sees them exit through ``poll``)."""
        self._end([p for p, _log, _started in self._procs.get(uid, {}).values()], grace)

    def _end(self, procs: list[subprocess.Popen], grace: float,
             after: Callable[[], None] = lambda: None) -> None:
        """SIGTERM, then SIGKILL after ``grace`` (at most 10 s), then ``after()``. On the
        server's loop the waiting happens in the background; elsewhere it blocks."""
        procs = [p for p in procs if p.poll() is None]
        for proc in procs:
            signal_container(proc, signal.SIGTERM)
        if not procs:
            after()
            return
        deadline = time.monotonic() + min(grace, 10.0)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or self._closing:
            wait_or_kill(procs, deadline)
            after()
            return
        self._ending.update(procs)

        def reap() -> None:
            left = [p for p in procs if p.poll() is None]
            for proc in procs:
                if proc not in left and proc in self._ending:
                    self._ending.discard(proc)
                    signal_container(proc, signal.SIGKILL)  # what is left of the container
            if left and time.monotonic() >= deadline:
                for proc in left:
                    signal_container(proc, signal.SIGKILL)
            if left:
                loop.call_later(0.1, reap)
            else:
                after()

        loop.call_later(0.05, reap)

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
            probes = self._probers.get(uid)
            probed = probes.states.get(name) if probes is not None else None
            if code is None:
                states[name] = ContainerState(
                    running=True, started_at=started, probed=probed is not None,
                    ready=probed.ready if probed else True,
                    started=probed.started if probed else True)
            else:
                signal_container(proc, signal.SIGKILL)  # a container ends with its main process
                exits[name] = (code if code >= 0 else 128 - code, clock.now())
                states[name] = ContainerState(running=False, exit_code=exits[name][0],
                                              started_at=started, finished_at=exits[name][1])
        return states

    def stop(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
        prober = self._probers.pop(uid, None)
        if prober is not None:
            prober.stop()
        procs = self._procs.pop(uid, {})
        self._end([p for p, _log, _started in procs.values()], grace, self._drop_tmps(uid))
        self._exits.pop(uid, None)
        self.mounts.pop(uid, None)

    def close(self) -> None:
        """Stop every pod's processes and wait for them (the lab is going down)."""
        self._closing = True
        for prober in self._probers.values():
            prober.stop()
        self._probers.clear()
        procs = [p for entries in self._procs.values() for p, _log, _started in entries.values()]
        procs += list(self._ending)
        self._procs.clear()
        self._ending.clear()
        self._end(procs, 10.0)
        self._tmps.clear()
        if self._tmp_base is not None:
            shutil.rmtree(self._tmp_base, ignore_errors=True)

    def logs(self, pod: dict[str, Any], container: str) -> str:
        path = pod_dir(self.home, pod) / f"{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def exec(self, request: Any, pod: dict[str, Any]) -> Any:
        from .exec_ws import serve_exec

        mounts = self.mounts.get(pod["metadata"]["uid"], {})
        specs = {c["name"]: c for c in pod["spec"].get("containers") or []}

        def environment(name: str) -> dict[str, str] | None:
            spec = specs.get(name)
            return self.environment(pod, spec, mounts.get(name, {})) if spec else None

        return await serve_exec(request, pod, mounts, environment)
