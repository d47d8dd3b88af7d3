"""KubeRay: a RayCluster becomes a head pod, worker pods per group and a head Service.

Pods come from the cluster's templates with KubeRay's labels (``ray.io/cluster``,
``ray.io/node-type``, ``ray.io/group``...), its environment (``RAY_ADDRESS``,
``KUBERAY_GEN_RAY_START_CMD`` from ``rayStartParams`` and the GPU limit) and an owner
reference. Worker groups are scaled to ``replicas`` (clamped to min/max, times
``numOfHosts``). Scheduling is the scheduler's: asking for more ``nvidia.com/gpu`` than
nodes have leaves pods Pending with the scheduler's reason, and the cluster not ready.
Status carries ready/available/desired workers, desired resources, head and endpoints.
Clusters whose pods run as local processes get machine-unique GCS and Ray client ports
(ray_ports.py).
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from ..apiserver import clock
from . import ray_ports
from .base import Controller, condition, owned_by, owner_ref

_DEFAULT_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080,
                  "serve": 8000}


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _limits(template: dict[str, Any], resource: str) -> Decimal:
    total = Decimal(0)
    for c in (template.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        value = (res.get("limits") or {}).get(resource) or (res.get("requests") or {}).get(
            resource)
        if value is not None:
            total += parse_quantity(value)
    return total


def _quantity(value: Decimal) -> str:
    return str(int(value)) if value == value.to_integral_value() else f"{int(value * 1000)}m"


class RayClusterController(Controller):
    name = "kuberay-operator"
    watches = (("ray.io", "rayclusters"), ("", "pods"))

    def reconcile(self) -> float | None:
        pods = self.list("", "pods")
        for rc in self.list("ray.io", "rayclusters"):
            if not rc["metadata"].get("deletionTimestamp"):
                self._sync(rc, [p for p in pods if owned_by(p, rc)])
        return None

    def _sync(self, rc: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        spec = rc["spec"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Failed", "Succeeded")]
        if spec.get("suspend"):
            for p in live:
                self.delete("", "pods", p["metadata"]["namespace"], p["metadata"]["name"])
            self._status(rc, [], {}, suspended=True)
            return
        self._service(rc)
        heads = [p for p in live if p["metadata"]["labels"].get("ray.io/node-type") == "head"]
        if not heads:
            self._create_pod(rc, "head", "headgroup", spec["headGroupSpec"])
        desired: dict[str, int] = {}
        for group in spec.get("workerGroupSpecs") or []:
            gname = group["groupName"]
            want = min(max(group.get("replicas", 0), group.get("minReplicas", 0)),
                       group.get("maxReplicas", 2147483647)) * group.get("numOfHosts", 1)
            if group.get("suspend"):
                want = 0
            desired[gname] = want
            mine = sorted((p for p in live if p["metadata"]["labels"].get("ray.io/group") == gname
                           and p["metadata"]["labels"].get("ray.io/node-type") == "worker"),
                          key=lambda p: p["metadata"]["name"])
            for _count in range(want - len(mine)):
                self._create_pod(rc, "worker", gname, group)
            for extra in mine[want:]:
                self.delete("", "pods", extra["metadata"]["namespace"], extra["metadata"]["name"])
        self._status(rc, live, desired)

    def _head_service(self, rc: dict[str, Any]) -> str:
        return f"{rc['metadata']['name']}-head-svc"

    def _ports(self, rc: dict[str, Any]) -> dict[str, int]:
        containers = rc["spec"]["headGroupSpec"]["template"]["spec"].get("containers") or []
        named = {p["name"]: p["containerPort"] for p in (containers[0].get("ports") or [])
                 if p.get("name")} if containers else {}
        used = set(named.values())
        defaults = {k: v for k, v in _DEFAULT_PORTS.items() if k not in named and v not in used}
        return {**defaults, **named}

    def _service(self, rc: dict[str, Any]) -> None:
        ns, name = rc["metadata"]["namespace"], rc["metadata"]["name"]
        if self.get("", "services", ns, self._head_service(rc)) is not None:
            return
        head = rc["spec"]["headGroupSpec"]
        chosen = ray_ports.choose(rc, self.list("", "services"))
        ports = [{"name": k, "port": v, "appProtocol": "tcp"}
                 for k, v in sorted(self._ports(rc).items())]
        self.create("", "services", {
            "metadata": {"name": self._head_service(rc), "namespace": ns,
                         "labels": {"ray.io/cluster": name, "ray.io/node-type": "head",
                                    "app.kubernetes.io/created-by": "kuberay-operator"},
                         "annotations": (rc["spec"].get("headServiceAnnotations") or {})
                         | chosen,
                         "ownerReferences": [owner_ref(rc)]},
            "spec": {"type": head.get("serviceType", "ClusterIP"),
                     "selector": {"ray.io/cluster": name, "ray.io/node-type": "head"},
                     "ports": ray_ports.map_gcs(ports, self._gcs_port(rc), chosen)}})

    def _gcs_port(self, rc: dict[str, Any]) -> int:
        ports = self._ports(rc)
        return ports.get("gcs-server") or ports.get("gcs") or 6379

    def _create_pod(self, rc: dict[str, Any], node_type: str, group: str,
                    group_spec: dict[str, Any]) -> None:
        ns, name = rc["metadata"]["namespace"], rc["metadata"]["name"]
        template = copy.deepcopy(group_spec["template"])
        meta = template.get("metadata") or {}
        meta.pop("creationTimestamp", None)
        labels = meta.setdefault("labels", {})
        labels.update({"ray.io/cluster": name, "ray.io/node-type": node_type,
                       "ray.io/group": group, "ray.io/is-ray-node": "yes",
                       "ray.io/identifier": f"{name}-{node_type}",
                       "app.kubernetes.io/created-by": "kuberay-operator",
                       "app.kubernetes.io/name": "kuberay"})
        labels.update(group_spec.get("labels") or {})
        prefix = f"{name}-head-" if node_type == "head" else f"{name}-{group}-worker-"
        meta.update(generateName=prefix, namespace=ns, ownerReferences=[owner_ref(rc)])
        spec = template["spec"]
        address = f"{self._head_service(rc)}.{ns}.svc.cluster.local"
        gcs = self._gcs_port(rc)
        lab = ray_ports.recorded(self.get("", "services", ns, self._head_service(rc)))
        if node_type == "head" and lab:  # the ports this head really listens on
            group_spec = {**group_spec, "rayStartParams": {
                **(group_spec.get("rayStartParams") or {}), **lab}}
            gcs = lab.get("port", gcs)
        start = self._start_command(node_type, group_spec, template, f"{address}:{gcs}")
        # As KubeRay: a head reaches its own GCS on 127.0.0.1, workers through the service.
        ray_address = f"127.0.0.1:{gcs}" if node_type == "head" else f"{address}:{gcs}"
        for i, container in enumerate(spec.get("containers") or []):
            env = container.setdefault("env", [])
            known = {e["name"] for e in env}
            extra = [("RAY_CLUSTER_NAME", name), ("RAY_IP", address), ("RAY_PORT", str(gcs)),
                     ("RAY_ADDRESS", ray_address), ("RAY_USAGE_STATS_ENABLED", "0")]
            if i == 0:
                extra.append(("KUBERAY_GEN_RAY_START_CMD", start))
            env.extend({"name": k, "value": v} for k, v in extra if k not in known)
        self.create("", "pods", {"metadata": meta, "spec": spec})

    @staticmethod
    def _start_command(node_type: str, group_spec: dict[str, Any], template: dict[str, Any],
                       address: str) -> str:
        params = dict(group_spec.get("rayStartParams") or {})
        gpus = _limits(template, "nvidia.com/gpu")
        cpus = _limits(template, "cpu")
        if gpus and "num-gpus" not in params:
            params["num-gpus"] = _quantity(gpus)
        if cpus and "num-cpus" not in params:
            params["num-cpus"] = str(max(int(cpus), 1))
        parts = ["ray start", "--head" if node_type == "head" else f"--address={address}"]
        parts += [f"--{k}={v}" for k, v in sorted(params.items())]
        parts.append("--block")
        return " ".join(parts)

    def _status(self, rc: dict[str, Any], live: list[dict[str, Any]], desired: dict[str, int],
                suspended: bool = False) -> None:
        spec, status = rc["spec"], dict(rc.get("status") or {})
        previous = status.get("conditions") or []
        workers = [p for p in live if p["metadata"]["labels"].get("ray.io/node-type") == "worker"]
        head = next((p for p in live if p["metadata"]["labels"].get("ray.io/node-type") == "head"),
                    None)
        ready_workers = sum(1 for p in workers if _ready(p))
        want = sum(desired.values())
        head_ready = head is not None and _ready(head)
        provisioned = head_ready and ready_workers >= want
        groups = spec.get("workerGroupSpecs") or []
        totals = {r: sum(_limits(g["template"], r) * desired.get(g["groupName"], 0)
                         for g in groups) + _limits(spec["headGroupSpec"]["template"], r)
                  for r in ("cpu", "memory", "nvidia.com/gpu", "google.com/tpu")}
        service = self.get("", "services", rc["metadata"]["namespace"], self._head_service(rc))
        status.update(
            readyWorkerReplicas=ready_workers, availableWorkerReplicas=ready_workers,
            desiredWorkerReplicas=want,
            minWorkerReplicas=sum(g.get("minReplicas", 0) * g.get("numOfHosts", 1)
                                  for g in groups),
            maxWorkerReplicas=sum(g.get("maxReplicas", 0) * g.get("numOfHosts", 1)
                                  for g in groups),
            desiredCPU=_quantity(totals["cpu"]), desiredMemory=_quantity(totals["memory"]),
            desiredGPU=_quantity(totals["nvidia.com/gpu"]),
            desiredTPU=_quantity(totals["google.com/tpu"]),
            observedGeneration=rc["metadata"]["generation"],
            endpoints={k: str(v) for k, v in self._ports(rc).items()},
            head={"podName": head["metadata"]["name"] if head else "",
                  "podIP": ((head or {}).get("status") or {}).get("podIP", ""),
                  "serviceName": self._head_service(rc),
                  "serviceIP": ((service or {}).get("spec") or {}).get("clusterIP", "")},
            conditions=[
                condition("HeadPodReady", head_ready, "HeadPodRunningAndReady" if head_ready
                          else "HeadPodNotFound" if head is None else "HeadPodNotReady",
                          "", previous),
                condition("RayClusterProvisioned", provisioned,
                          "AllPodRunningAndReadyFirstTime" if provisioned
                          else "RayClusterPodsProvisioning", "", previous)],
        )
        state = "suspended" if suspended else ("ready" if provisioned else status.get("state"))
        if state and state != status.get("state"):
            status["state"] = state
            transitions = dict(status.get("stateTransitionTimes") or {})
            transitions[state] = clock.now()
            status["stateTransitionTimes"] = transitions
        if not status.get("state"):
            status.pop("state", None)
        before = {k: v for k, v in (rc.get("status") or {}).items() if k != "lastUpdateTime"}
        if before != {k: v for k, v in status.items() if k != "lastUpdateTime"}:
            status["lastUpdateTime"] = clock.now()
            self.set_status("ray.io", "rayclusters", rc, status)
