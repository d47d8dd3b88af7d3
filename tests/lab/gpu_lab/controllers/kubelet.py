"""The kubelet of every lab node: bound pods go Pending -> Running -> Ready (-> Succeeded).

For each pod bound to a node it waits for the pod's volumes (claims bound, no other node
holding a ReadWriteOnce claim, configMaps and secrets present), pretends to pull images
(``gpu-lab.llmops.io/start-seconds``, default 0.5 s), starts the containers through a
``PodRuntime`` (see runtime.py), and reports Ready once readiness and startup probes'
``initialDelaySeconds`` have passed. Deleted pods are stopped, then removed. Delays are
scaled by GPU_LAB_TIME_SCALE. ``pods/log`` and ``pods/exec`` are served by the runtime.

Process pods (process_runtime.py) are networked for real (pod_network.py): each gets a
loopback pod IP of its own before its containers start (other pods get a made-up
10.128.x.y), waits in ContainerCreating while a Service name it uses has no running pod,
and its readiness comes from real probes (probes.py) instead of the probe delays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from ..apiserver import clock
from ..apiserver.errors import ApiError, bad_request
from .base import Controller, condition
from .image_pull import PullBackOff
from .pod_network import LoopbackPool
from .process_runtime import ProcessRuntime, wants_process
from .runtime import (
    ANNOTATION_RUNTIME,
    ContainerState,
    FakeRuntime,
    PodRuntime,
    pod_mounts,
    volume_dirs,
)
from .storage import LOCAL_PATH

ANNOTATION_START_SECONDS = "gpu-lab.llmops.io/start-seconds"
_TERMINAL = ("Succeeded", "Failed")


@dataclass
class _PodRecord:
    seen: float
    runtime: str
    started: float | None = None
    started_at: str = ""
    restarts: int = 0
    backoff_until: float | None = None
    last_state: dict[str, Any] | None = None
    ip: str | None = None
    pod: dict[str, Any] | None = None  # last seen: to stop it if it vanishes (grace 0)


class Kubelet(Controller):
    name = "kubelet"
    watches = (("", "pods"), ("", "persistentvolumeclaims"), ("", "configmaps"),
               ("", "secrets"), ("", "services"))

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self.runtimes: dict[str, PodRuntime] = {"fake": FakeRuntime(self.settings.time_scale)}
        self.runtimes["process"] = ProcessRuntime(
            self.settings.home, self.get, self.list, self.settings.time_scale,
            self.settings.probe_tick,
            on_change=self._probed, on_event=self._runtime_event)
        self.pod_ips = LoopbackPool()
        # Pods of the collection's images run as local processes (process_runtime.py).
        self.runtime_selector: Callable[[dict[str, Any]], str | None] | None = _by_image
        self._pods: dict[str, _PodRecord] = {}
        self._ips = 0
        self.pulls = PullBackOff(self.scaled)  # images that cannot be pulled (image_pull.py)
        server.http.pod_hooks["log"] = self._serve_logs
        server.http.pod_hooks["exec"] = self._serve_exec

    # --- runtimes ------------------------------------------------------------------------
    def register_runtime(self, name: str, runtime: PodRuntime) -> None:
        self.runtimes[name] = runtime

    def _probed(self) -> None:
        if self.server.controllers is not None:
            self.server.controllers.poke(self.name)

    def _runtime_event(self, ref: dict[str, Any], reason: str, message: str,
                       kind: str) -> None:
        self.event(ref, reason, message, kind)

    def close(self) -> None:
        """The lab stops: so do the pods' processes (a restarted lab restarts them)."""
        for runtime in self.runtimes.values():
            closer = getattr(runtime, "close", None)
            if closer is not None:
                closer()

    def runtime_for(self, pod: dict[str, Any]) -> str:
        chosen = self.runtime_selector(pod) if self.runtime_selector is not None else None
        chosen = chosen or (pod["metadata"].get("annotations") or {}).get(ANNOTATION_RUNTIME)
        return chosen if chosen in self.runtimes else "fake"

    # --- reconcile -----------------------------------------------------------------------
    def reconcile(self) -> float | None:
        waits: list[float] = []
        live = set()
        for pod in self.list("", "pods"):
            if not pod["spec"].get("nodeName"):
                continue
            live.add(pod["metadata"]["uid"])
            wait = self._sync(pod)
            if wait is not None:
                waits.append(wait)
        for uid in [u for u in self._pods if u not in live]:
            gone = self._pods.pop(uid)
            if gone.started is not None and gone.pod is not None:  # deleted with grace 0
                self.runtimes[gone.runtime].stop(gone.pod)
            self.pod_ips.release(uid)
            self.pulls.forget(uid)
        return min(waits) if waits else None

    def _sync(self, pod: dict[str, Any]) -> float | None:
        meta, status = pod["metadata"], pod.get("status") or {}
        record = self._pods.get(meta["uid"])
        if meta.get("deletionTimestamp"):
            if record is not None and record.started is not None:
                self.runtimes[record.runtime].stop(pod)
                record.started = None
            self.delete("", "pods", meta["namespace"], meta["name"], grace=0)
            return None
        if status.get("phase") in _TERMINAL:
            return None
        now = time.monotonic()
        if record is None:
            record = _PodRecord(seen=now, runtime=self.runtime_for(pod))
            if status.get("phase") == "Running":  # restored from disk: it was running
                record.started, record.started_at = now - 3600, status.get("startTime", "")
            if status.get("podIP"):  # restored: the pod keeps its address
                record.ip = status["podIP"]
                if self._loopback(record) and not self.pod_ips.reserve(meta["uid"], record.ip):
                    record.ip = None
            self._pods[meta["uid"]] = record
        record.pod = pod
        if record.backoff_until is not None:
            if now < record.backoff_until:
                return record.backoff_until - now
            record.backoff_until, record.started, record.seen = None, None, now - 3600.0
        if record.started is None:
            return self._start(pod, record, now)
        return self._report(pod, record, now)

    def _start(self, pod: dict[str, Any], record: _PodRecord, now: float) -> float | None:
        problem, claims = self._volumes(pod)
        if problem:
            self._waiting(pod, "ContainerCreating")
            self.event(pod, problem[0], problem[1], "Warning")
            return None
        annotations = pod["metadata"].get("annotations") or {}
        delay = self.scaled(float(annotations.get(ANNOTATION_START_SECONDS, "0.5")))
        if now - record.seen < delay:
            self._waiting(pod, "ContainerCreating")
            return delay - (now - record.seen)
        pull = self.pulls.check(pod, now)
        if pull is not None:
            self._waiting(pod, pull.reason, pull.message)
            if pull.event[0]:
                self.event(pod, *pull.event, "Warning")
            return pull.wait
        runtime = self.runtimes[record.runtime]
        unresolved = getattr(runtime, "unresolved", None)  # held before the first start only
        missing = unresolved(pod) if unresolved is not None and not record.restarts else []
        if missing:
            self._waiting(pod, "ContainerCreating")
            self.event(pod, "ServiceNotResolvable", "gpu-lab: waiting for service name(s) "
                       f"{', '.join(missing)}; the lab has no DNS or ClusterIP and puts a "
                       "running endpoint pod's IP in their place", "Warning")
            return 1.0
        sources = {(k, o["metadata"]["name"]): o for k in ("configmaps", "secrets")
                   for o in self.list("", k, pod["metadata"]["namespace"])}
        volumes = volume_dirs(self.settings.home, pod, claims, sources)
        status = pod.setdefault("status", {})
        status["podIP"] = self._pod_ip(pod, record)
        status["podIPs"] = [{"ip": status["podIP"]}]
        status["hostIP"] = self._node_ip(pod["spec"]["nodeName"])
        runtime.start(pod, pod_mounts(pod, volumes))
        record.started, record.started_at = now, clock.now()
        for c in pod["spec"].get("containers") or []:
            self.event(pod, "Started", f"Started container {c['name']}")
        return self._report(pod, record, now)

    def _loopback(self, record: _PodRecord) -> bool:
        return bool(getattr(self.runtimes.get(record.runtime), "loopback_network", False))

    def _pod_ip(self, pod: dict[str, Any], record: _PodRecord) -> str:
        """The pod's address, kept across container restarts: loopback for process pods
        (pod_network.py), a made-up 10.128.x.y for simulated ones."""
        if record.ip is None and self._loopback(record):
            record.ip = self.pod_ips.allocate(pod["metadata"]["uid"])
        elif record.ip is None:
            self._ips += 1
            record.ip = f"10.128.{self._ips // 250 % 250}.{self._ips % 250 + 2}"
        return record.ip

    def _volumes(self, pod: dict[str, Any]) -> tuple[tuple[str, str] | None, dict[str, Path]]:
        ns = pod["metadata"]["namespace"]
        claims: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes") or []:
            for kind, key, ref_key in (("configmaps", "configMap", "name"),
                                       ("secrets", "secret", "secretName")):
                ref = volume.get(key)
                if ref and not ref.get("optional") and self.get("", kind, ns,
                                                                ref.get(ref_key, "")) is None:
                    what = kind[:-1] if kind == "configmaps" else "secret"
                    return ("FailedMount", f'MountVolume.SetUp failed for volume "{volume["name"]}"'
                            f' : {what} "{ref.get(ref_key)}" not found'), {}
            ref = volume.get("persistentVolumeClaim")
            if not ref:
                continue
            claim = self.get("", "persistentvolumeclaims", ns, ref["claimName"])
            pv_name = (claim or {}).get("spec", {}).get("volumeName")
            pv = self.get("", "persistentvolumes", None, pv_name) if pv_name else None
            if pv is None:
                return ("FailedMount", f'persistentvolumeclaim "{ref["claimName"]}" is not bound'
                        ), {}
            holders = self._rwo_holders(pod, claim, ref["claimName"])
            if holders:
                return ("FailedAttachVolume", f'Multi-Attach error for volume "{pv_name}" Volume '
                        f"is already used by pod(s) {', '.join(holders)}"), {}
            claims[ref["claimName"]] = Path((pv["metadata"].get("annotations") or {}).get(
                LOCAL_PATH, str(self.settings.home / "volumes" / pv_name)))
        return None, claims

    def _rwo_holders(self, pod: dict[str, Any], claim: dict[str, Any], name: str) -> list[str]:
        if "ReadWriteMany" in (claim["spec"].get("accessModes") or []):
            return []
        node = pod["spec"]["nodeName"]
        holders = []
        for other in self.list("", "pods", pod["metadata"]["namespace"]):
            if other["metadata"]["uid"] == pod["metadata"]["uid"]:
                continue
            uses = any((v.get("persistentVolumeClaim") or {}).get("claimName") == name
                       for v in other["spec"].get("volumes") or [])
            running = (other.get("status") or {}).get("phase") not in _TERMINAL
            other_node = other["spec"].get("nodeName")
            if uses and running and other_node and other_node != node and self._pods.get(
                    other["metadata"]["uid"], _PodRecord(0, "")).started is not None:
                holders.append(other["metadata"]["name"])
        return holders

    def _ready_after(self, container: dict[str, Any]) -> float:
        delay = 0.0
        for probe in ("startupProbe", "readinessProbe"):
            spec = container.get(probe)
            if isinstance(spec, dict):
                delay += float(spec.get("initialDelaySeconds", 0)) + float(
                    spec.get("periodSeconds", 10)) * (1 if probe == "readinessProbe" else 0)
        return self.scaled(delay)

    def _report(self, pod: dict[str, Any], record: _PodRecord, now: float) -> float | None:
        states = self.runtimes[record.runtime].poll(pod)
        elapsed = now - (record.started or now)
        waits, statuses = [], []
        for c in pod["spec"].get("containers") or []:
            state = states.get(c["name"], ContainerState(running=False, exit_code=1))
            ready_after = 0.0 if state.probed else self._ready_after(c)
            ready = state.running and state.ready and elapsed >= ready_after
            if state.running and not ready and not state.probed:
                waits.append(max(ready_after - elapsed, 0.05))
            statuses.append(self._container_status(c, state, ready, record))
        all_done = all(not s.running for s in states.values()) and states
        failed = any((s.exit_code or 0) != 0 for s in states.values())
        policy = pod["spec"].get("restartPolicy", "Always")
        if all_done and (policy == "Always" or (policy == "OnFailure" and failed)):
            return self._back_off(pod, record, statuses, now)
        if all_done:
            phase = "Failed" if failed else "Succeeded"
        else:
            phase = "Running"
            if pod["spec"].get("restartPolicy", "Always") != "Always" or not getattr(
                    self.runtimes[record.runtime], "exit_notices", True):
                waits.append(0.2 if policy != "Always" else 1.0)
        ready = phase == "Running" and all(s["ready"] for s in statuses)
        self._write_status(pod, phase, statuses, ready, record)
        return min(waits) if waits else None

    def _back_off(self, pod: dict[str, Any], record: _PodRecord, statuses: list[dict],
                  now: float) -> float:
        """Containers that exited under restartPolicy Always/OnFailure: CrashLoopBackOff,
        then a restart (10 s doubling up to 300 s, scaled)."""
        self.runtimes[record.runtime].stop(pod)
        record.restarts += 1
        record.last_state = {s["name"]: s["state"] for s in statuses}
        delay = self.scaled(min(10 * 2 ** (record.restarts - 1), 300))
        record.backoff_until = now + delay
        for s in statuses:
            s.update(ready=False, started=False, restartCount=record.restarts,
                     lastState=record.last_state[s["name"]],
                     state={"waiting": {"reason": "CrashLoopBackOff", "message": (
                         f"back-off {int(delay / max(self.settings.time_scale, 1e-9))}s "
                         f"restarting failed container={s['name']} pod="
                         f"{pod['metadata']['name']}_{pod['metadata']['namespace']}"
                         f"({pod['metadata']['uid']})")}})
        self._write_status(pod, "Running", statuses, False, record)
        self.event(pod, "BackOff", "Back-off restarting failed container", "Warning")
        return delay

    @staticmethod
    def _container_status(c: dict[str, Any], state: ContainerState, ready: bool,
                          record: _PodRecord) -> dict:
        if state.running:
            current: dict[str, Any] = {"running": {"startedAt": state.started_at}}
        else:
            code = state.exit_code or 0
            current = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0
                                      else "Error", "startedAt": state.started_at,
                                      "finishedAt": state.finished_at or clock.now()}}
        status = {"name": c["name"], "image": c.get("image", ""),
                  "imageID": f"{c.get('image', '')}@sha256:{'0' * 64}",
                  "containerID": f"cri-o://{abs(hash((c['name'], state.started_at))):x}",
                  "ready": ready, "restartCount": record.restarts,
                  "started": state.running and state.started,
                  "state": current}
        if record.last_state and c["name"] in record.last_state:
            status["lastState"] = record.last_state[c["name"]]
        return status

    def _waiting(self, pod: dict[str, Any], reason: str, message: str = "") -> None:
        waiting = {"reason": reason, **({"message": message} if message else {})}
        statuses = [{"name": c["name"], "image": c.get("image", ""), "imageID": "",
                     "ready": False, "restartCount": 0, "started": False,
                     "state": {"waiting": dict(waiting)}}
                    for c in pod["spec"].get("containers") or []]
        self._write_status(pod, "Pending", statuses, False, None)

    def _write_status(self, pod: dict[str, Any], phase: str, statuses: list[dict],
                      ready: bool, record: _PodRecord | None) -> None:
        status = dict(pod.get("status") or {})
        previous = status.get("conditions") or []
        started = record is not None and record.started is not None
        conditions = [
            condition("PodReadyToStartContainers", started, previous=previous),
            condition("Initialized", True, previous=previous),
            condition("Ready", ready, "" if ready else "ContainersNotReady", previous=previous),
            condition("ContainersReady", ready, "" if ready else "ContainersNotReady",
                      previous=previous),
            condition("PodScheduled", True, previous=previous),
        ]
        status.update(phase=phase, conditions=conditions, containerStatuses=statuses,
                      hostIP=self._node_ip(pod["spec"]["nodeName"]),
                      startTime=status.get("startTime") or clock.now())
        if started and record is not None and record.ip:
            status["podIP"] = record.ip
            status["podIPs"] = [{"ip": record.ip}]
        self.set_status("", "pods", pod, status)

    def _node_ip(self, node: str) -> str:
        found = self.get("", "nodes", None, node)
        for address in ((found or {}).get("status") or {}).get("addresses") or []:
            if address.get("type") == "InternalIP":
                return address["address"]
        return "192.0.2.1"

    # --- pods/log and pods/exec ------------------------------------------------------------
    async def _serve_logs(self, request: web.Request, pod: dict[str, Any]) -> web.Response:
        containers = [c["name"] for c in pod["spec"].get("containers") or []]
        name = request.query.get("container") or (containers[0] if len(containers) == 1 else "")
        if name not in containers:
            raise bad_request(f"a container name must be specified for pod "
                              f"{pod['metadata']['name']}, choose one of: {containers}")
        record = self._pods.get(pod["metadata"]["uid"])
        if record is None or (record.started is None and not record.restarts):
            raise bad_request(f'container "{name}" in pod "{pod["metadata"]["name"]}" is '
                              "waiting to start: ContainerCreating")
        return web.Response(text=self.runtimes[record.runtime].logs(pod, name))

    async def _serve_exec(self, request: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        record = self._pods.get(pod["metadata"]["uid"])
        runtime = self.runtimes[record.runtime] if record else None
        handler = getattr(runtime, "exec", None)
        if handler is None:
            raise ApiError(400, "BadRequest", f"exec is not available for pod "
                           f"{pod['metadata']['name']}: its containers are simulated "
                           f"(runtime {record.runtime if record else 'none'})")
        return await handler(request, pod)


def _by_image(pod: dict[str, Any]) -> str | None:
    return "process" if wants_process(pod) else None
