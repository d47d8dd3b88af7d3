# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The serving stage on a cluster: preflight, apply, wait, endpoint, removal.

API
---
``RayVllmDeployment(client, cfg)``, ``cfg`` as ``serving.render`` takes it (name,
namespace, image, pvc, model_dir, node_selector, ...):

- ``preflight(plan)``: refuses, before any write, a layout needing more GPUs than the
  selected nodes report allocatable (with the numbers), and a missing model volume.
- ``ensure_api_key(api_key, check_mode) -> bool``: the API-key Secret; a given key is
  written, otherwise an existing Secret is kept and a missing one gets a random key;
  its ``metrics-key`` (Prometheus' credential for ``GET /metrics``) is generated once
  and kept across reruns and key rotations.
  The key never appears in a result or a diff; its SHA-256 goes to
  ``cfg["api_key_sha256"]`` (rendered as the heads' annotation, see ``serving_roll``;
  None in check mode when a key would be generated).
- ``apply(plan, check_mode) -> (changed, diffs)``: every rendered object, server-side
  apply; RayClusters of replicas the plan no longer has are deleted.
- ``apply_objects(manifests, check_mode) -> (changed, diffs)``: the write path of
  ``apply``, also used for the hand-over ConfigMap.
- ``wait(plan, timeout, progress, check_mode) -> status``: (skipped in check mode) pods
  scheduled, workers joined, vLLM healthy (the head's readiness probe on ``/health``),
  the Route admitted; a head that fails (the launcher's exit codes: bad options, model
  not ready, GPUs missing) stops the wait at once with the launcher's last log lines,
  and a pod that cannot start (image pull, crash loop, unschedulable: ``pods.py``)
  stops it with the pod's reason and message.
- ``endpoint() -> str``: ``https://<route host>``.
- ``remove(check_mode) -> bool``: everything ``apply`` wrote (of either backend), the
  Secret and the hand-over ConfigMap.

``apply`` of the Ray backend deletes the other backends' objects of the same model (a
model switched backends); ``serving_deployment.PlainVllmDeployment`` is the
``deployment`` backend (one Deployment of plain vLLM pods) and
``serving_kserve.KServeServing`` the ``kserve`` backend (KServe's multi-node
InferenceServices), over the same preflight, key,
write path, Route and removal.

The order (decide, act, wait, record) and check mode live in ``serving_runner.run``.
"""

from __future__ import annotations

import base64
import secrets

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common import contract
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.diff import has_changed
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
    NotFoundError,
    OperationFailedError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.wait import (
    WaitStatus,
    wait_for,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import serving_objects
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.gpu_nodes import allocatable
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.pods import PodFaults
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving_roll import key_sha256
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import render

API_KEY_FIELD = "api-key"
METRICS_KEY_FIELD = render.METRICS_KEY_FILE  # Prometheus' key: GET /metrics only
# The launcher's exit codes that no restart can fix (the controller/runtime contract).
_LAUNCHER_EXITS = contract.LAUNCH_EXIT_REASONS


def _selector(labels: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


def _without_status(obj: dict | None) -> dict:
    return {k: v for k, v in (obj or {}).items() if k != "status"}


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


class RayVllmDeployment:
    def __init__(self, client, cfg: dict):
        self.client = client
        self.cfg = cfg
        self.ns = cfg["namespace"]
        self.name = cfg["name"]

    # --- preflight --------------------------------------------------------------------
    def gpu_slots(self, gpus_per_pod: int) -> tuple[int, list[str]]:
        """How many pods of ``gpus_per_pod`` GPUs the selected nodes can hold, and a
        listing of what each node reports."""
        nodes = self.client.list("v1", "Node",
                                 label_selector=_selector(self.cfg.get("node_selector")))
        slots, listing = 0, []
        for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
            gpus = allocatable(node)
            listing.append(f"{node['metadata']['name']}={gpus}")
            slots += gpus // gpus_per_pod if gpus_per_pod else 0
        return slots, listing

    def preflight(self, plan: dict, check_mode: bool = False) -> dict:
        """Refuse what cannot run. In check mode, GPUs and the volume that earlier stages
        would provide (they changed nothing either) are reported as warnings instead."""
        report = {"warnings": []}
        try:
            report.update(self._preflight(plan))
        except InvalidInputError as exc:
            if not check_mode:
                raise
            report["warnings"].append(f"{exc.msg} (check mode: an earlier stage may provide "
                                      "it in a real run)")
        return report

    def pods_by_size(self, plan: dict) -> dict[int, int]:
        """GPUs per pod -> pods of that size, all replicas (the Ray backend's pods)."""
        shape = plan["ray_cluster"]
        per_pod: dict[int, int] = {}
        for group in shape["worker_groups"]:
            per_pod[group["gpus_per_worker"]] = (per_pod.get(group["gpus_per_worker"], 0)
                                                 + group["replicas"] * shape["clusters"])
        if shape["head_gpus"]:
            per_pod[shape["head_gpus"]] = per_pod.get(shape["head_gpus"], 0) + shape["clusters"]
        return per_pod

    def _preflight(self, plan: dict) -> dict:
        shape = plan["ray_cluster"]
        per_pod = self.pods_by_size(plan)
        needed_gpus = sum(g * n for g, n in per_pod.items())
        report = {"gpus_needed": needed_gpus, "nodes": []}
        for gpus_per_pod, want in sorted(per_pod.items()):
            slots, listing = self.gpu_slots(gpus_per_pod)
            report["nodes"] = listing
            if slots < want:
                raise InvalidInputError(
                    f"the layout needs {needed_gpus} GPUs ({shape['clusters']} replica(s) of "
                    f"TP {plan['tensor_parallel_size']} x PP {plan['pipeline_parallel_size']}):"
                    f" {want} pod(s) with {gpus_per_pod} nvidia.com/gpu each, but the nodes "
                    f"selected by '{_selector(self.cfg.get('node_selector')) or '(all)'}' can "
                    f"hold {slots} (allocatable: {', '.join(listing) or 'no nodes'})",
                    gpus_needed=needed_gpus, pods_needed=want, pods_possible=slots)
        pvc = self.client.get("v1", "PersistentVolumeClaim", self.cfg["pvc"], self.ns)
        if pvc is None:
            raise InvalidInputError(
                f"the model volume {self.ns}/{self.cfg['pvc']} does not exist: stage the "
                "model first (role llmops.gpu_stack.model_storage)")
        modes = (pvc.get("spec") or {}).get("accessModes") or []
        if "ReadWriteMany" not in modes and "ReadOnlyMany" not in modes:
            raise InvalidInputError(
                f"the model volume {self.ns}/{self.cfg['pvc']} is {', '.join(modes)}: every "
                "Ray pod mounts it, on different nodes, so it must be ReadWriteMany")
        return report

    # --- the API key -------------------------------------------------------------------
    def ensure_api_key(self, api_key: str | None, check_mode: bool) -> bool:
        secret_name = self.cfg.get("api_key_secret")
        if not secret_name:
            return False
        current = self.client.get("v1", "Secret", secret_name, self.ns)
        stored = ((current or {}).get("data") or {}).get(API_KEY_FIELD)
        metrics = ((current or {}).get("data") or {}).get(METRICS_KEY_FIELD)
        held = base64.b64decode(stored).decode() if stored else None
        key = api_key if api_key is not None else held
        self.cfg["api_key_sha256"] = key_sha256(key) if key else None
        if key is not None and key == held and metrics:
            return False
        if check_mode:
            return True
        key = key if key is not None else secrets.token_urlsafe(32)
        self.cfg["api_key_sha256"] = key_sha256(key)
        self.client.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                           "metadata": {"name": secret_name, "namespace": self.ns,
                                        "labels": {"app.kubernetes.io/instance": self.name}},
                           "stringData": {API_KEY_FIELD: key, METRICS_KEY_FIELD: (
                               base64.b64decode(metrics).decode() if metrics
                               else secrets.token_urlsafe(32))}}, check_mode=False)
        return True

    # --- apply -------------------------------------------------------------------------
    def apply_objects(self, manifests: list[dict], check_mode: bool) -> tuple[bool, dict]:
        """Server-side apply each manifest; whether any changed, and their diffs."""
        changed, diffs = False, {}
        for manifest in manifests:
            result = self.client.apply(manifest, check_mode=check_mode)
            if result.before is None or has_changed(_without_status(result.before),
                                                    _without_status(result.after)):
                changed = True
                key = f"{manifest['kind']}/{manifest['metadata']['name']}"
                diffs[key] = {"before": _without_status(result.before),
                              "after": _without_status(result.after)}
        return changed, diffs

    backend = "ray"

    def manifests(self, plan: dict) -> list[dict]:
        """This backend's serving objects."""
        return render.manifests(plan, self.cfg)

    def apply(self, plan: dict, check_mode: bool) -> tuple[bool, dict]:
        ns_obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns}}
        changed, diffs = self.apply_objects([ns_obj, *self.manifests(plan)], check_mode)
        for extra in self._stale_clusters(plan):
            changed |= self.client.delete("ray.io/v1", "RayCluster", extra, self.ns,
                                          check_mode=check_mode)
            self._delete_if_present("networking.k8s.io/v1", "NetworkPolicy",
                                    render.network_policy.peers_policy_name(extra), check_mode)
            diffs[f"RayCluster/{extra}"] = {"before": {"name": extra}, "after": {}}
        # a model moved from another backend: its Deployment or InferenceServices go
        changed |= self.delete_all([*self.deployment_targets(), *self.kserve_targets()],
                                   check_mode, diffs)
        return changed, diffs

    def _clusters(self) -> list[dict]:
        return serving_objects.ray_clusters(self.client, self.ns, self.name)

    def ray_targets(self) -> list[tuple]:
        return serving_objects.ray_targets(self.client, self.ns, self.name)

    def deployment_targets(self) -> list[tuple]:
        return serving_objects.deployment_targets(self.name)

    def kserve_targets(self) -> list[tuple]:
        return serving_objects.kserve_targets(self.client, self.ns, self.name)

    def delete_all(self, targets: list[tuple], check_mode: bool, diffs: dict | None = None
                   ) -> bool:
        return serving_objects.delete_all(self.client, self.ns, targets, check_mode, diffs)

    def _stale_clusters(self, plan: dict) -> list[str]:
        wanted = {f"{self.name}-{i}" for i in range(plan["ray_cluster"]["clusters"])}
        return sorted(c["metadata"]["name"] for c in self._clusters()
                      if c["metadata"]["name"] not in wanted)

    # --- wait --------------------------------------------------------------------------
    def _head_failure(self, pod: dict) -> str | None:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            for state in (status.get("state") or {}, status.get("lastState") or {}):
                code = (state.get("terminated") or {}).get("exitCode")
                if code in _LAUNCHER_EXITS:
                    return f"{_LAUNCHER_EXITS[code]} (exit code {code})"
        return None

    def raise_launcher_failure(self, pod: dict, what: str) -> None:
        """Stop the wait when ``pod``'s launcher exited with a code no restart fixes."""
        failure = self._head_failure(pod)
        if failure:
            log = self.client.logs(pod["metadata"]["name"], self.ns)
            tail = "\n".join(log.strip().splitlines()[-8:])
            raise OperationFailedError(f"{what} failed: {failure}: {tail}", reason=failure,
                                       pod=pod["metadata"]["name"], log_tail=log[-3000:])

    def _cluster_status(self, cluster: str, pods: list[dict], want_workers: int) -> tuple:
        mine = [p for p in pods if (p["metadata"].get("labels") or {}).get(
            "ray.io/cluster") == cluster]
        heads = [p for p in mine if p["metadata"]["labels"].get("ray.io/node-type") == "head"]
        workers = [p for p in mine if p["metadata"]["labels"].get("ray.io/node-type")
                   == "worker"]
        scheduled = sum(1 for p in mine if p["spec"].get("nodeName"))
        joined = sum(1 for p in workers if _ready(p))
        head = heads[0] if heads else None
        if head is not None:
            self.raise_launcher_failure(head, f"the head of {self.ns}/{cluster}")
        healthy = head is not None and _ready(head)
        line = (f"{cluster}: {scheduled} of {1 + want_workers} pods scheduled, {joined} of "
                f"{want_workers} workers running, vLLM {'healthy' if healthy else 'not ready'}")
        return healthy and joined >= want_workers, line

    def wait_parts(self, names: list[str], step, what: str, timeout: float, progress=None,
                   check_mode: bool = False, clusters: list[str] | None = None) -> dict:
        """The one wait of every backend: ``step()`` -> (ready names, progress lines) for
        the backend's ``names``, plus the Route admitted; with progress, until ``timeout``."""
        seen: dict = {}

        def _check() -> WaitStatus:
            ready, lines = step()
            if self.route_host():
                ready.append("route")
            else:
                lines.append(f"Route {self.name} not admitted yet")
            seen["lines"] = lines
            status = WaitStatus.of([*names, "route"], ready, "serving parts ready")
            return WaitStatus(done=status.done, present=status.present,
                              missing=status.missing, progress="; ".join(lines))

        final = wait_for(_check, timeout=timeout, what=what, interval=2.0, backoff=1.2,
                         max_interval=10.0, progress=progress, progress_every=15.0,
                         check_mode=check_mode)
        return {"clusters": clusters or [], "ready": list(final.present),
                "skipped": final.skipped, "state": seen.get("lines", [])}

    def wait(self, plan: dict, timeout: float, progress=None, check_mode: bool = False) -> dict:
        shape = plan["ray_cluster"]
        want_workers = sum(g["replicas"] for g in shape["worker_groups"])
        names = [f"{self.name}-{i}" for i in range(shape["clusters"])]
        what = f"the serving stack {self.ns}/{self.name}"
        faults = PodFaults()

        def _step() -> tuple[list, list]:
            pods = self.client.list("v1", "Pod", self.ns,
                                    label_selector=f"app.kubernetes.io/instance={self.name}")
            ready, lines = [], []
            for cluster in names:
                done, line = self._cluster_status(cluster, pods, want_workers)
                lines.append(line)
                if done:
                    ready.append(cluster)
            faults.check(pods, what)
            return ready, lines

        return self.wait_parts(names, _step, what, timeout, progress, check_mode,
                               clusters=names)

    # --- endpoint and removal ------------------------------------------------------------
    def route_host(self) -> str | None:
        route = self.client.get("route.openshift.io/v1", "Route", self.name, self.ns) or {}
        for ingress in (route.get("status") or {}).get("ingress") or []:
            admitted = any(c.get("type") == "Admitted" and c.get("status") == "True"
                           for c in ingress.get("conditions") or [])
            if admitted and ingress.get("host"):
                return ingress["host"]
        return None

    def endpoint(self) -> str | None:
        host = self.route_host()
        return f"https://{host}" if host else None

    def _delete_if_present(self, api_version, kind, name, check_mode) -> bool:
        try:
            return self.client.delete(api_version, kind, name, self.ns, check_mode=check_mode)
        except NotFoundError:
            return False

    def remove(self, check_mode: bool) -> bool:
        """Every object of this model, whichever backend wrote it."""
        if self.client.get("v1", "Namespace", self.ns) is None:
            return False
        targets = [*self.ray_targets(), *self.deployment_targets(), *self.kserve_targets(),
                   ("route.openshift.io/v1", "Route", self.name), ("v1", "Service", self.name),
                   ("v1", "ConfigMap", render.handover_name(self.name))]
        if self.cfg.get("api_key_secret"):
            targets.append(("v1", "Secret", self.cfg["api_key_secret"]))
        return self.delete_all(targets, check_mode)
