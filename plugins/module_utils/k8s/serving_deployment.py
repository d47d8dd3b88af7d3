# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The ``deployment`` serving backend on a cluster: plain vLLM pods, no Ray.

``PlainVllmDeployment(client, cfg)`` has ``RayVllmDeployment``'s surface (``serving.py``)
and shares its API-key Secret, write path, Route, endpoint and removal; what differs:

- ``preflight(plan)``: ``replicas`` pods of TP x PP GPUs each must fit the selected
  nodes' allocatable GPUs (a pod's GPUs on one node), and the model volume must be
  ReadWriteMany (the pods may land on different nodes);
- ``apply(plan, check_mode)``: the objects of ``serving.render_deployment`` (Deployment,
  Service, Route, NetworkPolicy, ServiceAccount); the Ray backend's objects of the same
  model (RayClusters, their policies) are deleted: the model switched backends;
- ``rolled(diffs)``: the Deployment's name when an existing pod template changed (a new
  key's digest, a new image, new arguments): the Deployment controller rolls its pods,
  one at a time, and ``wait`` waits for the roll;
- ``wait(plan, timeout, progress, check_mode)``: the Deployment's pods updated and Ready
  (vLLM's readiness probe on ``/health``), no old pod left, the Route admitted; a pod
  whose launcher exits with an unrecoverable code (bad options, model not ready) or
  that cannot start (``pods.PodFaults``) ends the wait at once with its reason.
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.pods import PodFaults
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving import (
    RayVllmDeployment,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import render_deployment

BACKEND = "deployment"


def _selector(labels: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


class PlainVllmDeployment(RayVllmDeployment):
    backend = BACKEND

    def pods_by_size(self, plan: dict) -> dict[int, int]:
        return {render_deployment.gpus_per_pod(plan): render_deployment.replicas(plan)}

    def manifests(self, plan: dict) -> list[dict]:
        return render_deployment.manifests(plan, self.cfg)

    def apply(self, plan: dict, check_mode: bool) -> tuple[bool, dict]:
        ns_obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns}}
        changed, diffs = self.apply_objects([ns_obj, *self.manifests(plan)], check_mode)
        # a model moved from another backend: its RayClusters or InferenceServices go
        changed |= self.delete_all([*self.ray_targets(), *self.kserve_targets()],
                                   check_mode, diffs)
        return changed, diffs

    def rolled(self, diffs: dict) -> list[str]:
        """The Deployment, when this run changed the pod template of an existing one."""
        diff = diffs.get(f"Deployment/{self.name}")
        if not diff or not diff["before"] or not diff["after"]:
            return []
        before = (diff["before"].get("spec") or {}).get("template")
        after = (diff["after"].get("spec") or {}).get("template")
        return [self.name] if before != after else []

    def _pods(self) -> list[dict]:
        pods = self.client.list("v1", "Pod", self.ns, label_selector=_selector(
            render_deployment.selector(self.name)))
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Failed", "Succeeded")]

    def _status(self, want: int) -> tuple[list[str], str]:
        """The replicas ready on the current template, and a progress line."""
        dep = self.client.get("apps/v1", "Deployment", self.name, self.ns) or {}
        status = dep.get("status") or {}
        observed = status.get("observedGeneration", 0) >= (dep.get("metadata") or {}).get(
            "generation", 1)
        updated, ready = status.get("updatedReplicas", 0), status.get("readyReplicas", 0)
        total = status.get("replicas", 0)
        current = observed and updated >= want and total == want
        done = min(ready, want) if current else 0
        line = (f"{self.name}: {updated} of {want} pods on the current template, {ready} "
                f"ready (vLLM healthy), {total} running")
        return [f"replica-{i}" for i in range(done)], line

    def wait(self, plan: dict, timeout: float, progress=None, check_mode: bool = False) -> dict:
        want = render_deployment.replicas(plan)
        what = f"the serving Deployment {self.ns}/{self.name}"
        faults = PodFaults()

        def _step() -> tuple[list, list]:
            pods = self._pods()
            for pod in pods:
                self.raise_launcher_failure(pod, f"the vLLM pod {self.ns}/"
                                                 f"{pod['metadata']['name']}")
            faults.check(pods, what)
            ready, line = self._status(want)
            return ready, [line]

        return self.wait_parts([f"replica-{i}" for i in range(want)], _step, what, timeout,
                               progress, check_mode)
