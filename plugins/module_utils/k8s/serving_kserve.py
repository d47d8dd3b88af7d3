# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The ``kserve`` serving backend on a cluster: KServe's multi-node InferenceServices.

``KServeServing(client, cfg)`` has ``RayVllmDeployment``'s surface (``serving.py``) and
shares its API-key Secret, write path, Route, endpoint and removal; what differs:

- ``preflight(plan)``: KServe must be installed (the cluster serves the
  ``serving.kserve.io`` InferenceService and ServingRuntime kinds: Red Hat OpenShift AI
  or Open Data Hub with KServe managed), else a clear error before any write; then the
  Ray backend's checks: ``PP x replicas`` pods of ``TP`` GPUs must fit the selected
  nodes, and the model volume must be ReadWriteMany (head and workers mount it on
  different nodes);
- ``apply(plan, check_mode)``: the objects of ``serving.render_kserve`` (ServingRuntime,
  one InferenceService per replica, Service, Route, NetworkPolicies, ServiceAccount);
  InferenceServices of replicas the plan no longer has are deleted, and so are the other
  backends' objects of the same model (it switched backends);
- ``rolled(diffs)``: the InferenceServices whose predictor changed (a new key's digest, a
  new image through the ServingRuntime): KServe's controller replaces their pods, and
  ``wait`` waits until each reports Ready for its current generation;
- ``wait(plan, timeout, progress, check_mode)``: each InferenceService Ready (KServe's
  ``Ready`` condition: head and worker Deployments available) for its current
  generation, the Route admitted; a head whose launcher exits with an unrecoverable code
  or a pod that cannot start (``pods.PodFaults``) ends the wait at once.
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
    NotFoundError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import serving_objects
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.pods import PodFaults
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving import (
    RayVllmDeployment,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import render_kserve

BACKEND = render_kserve.BACKEND
KINDS = (("serving.kserve.io/v1beta1", "InferenceService"),
         ("serving.kserve.io/v1alpha1", "ServingRuntime"))


def _condition(obj: dict, kind: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c.get("type") == kind), {})


class KServeServing(RayVllmDeployment):
    backend = BACKEND

    def pods_by_size(self, plan: dict) -> dict[int, int]:
        tp, pp = render_kserve.check_plan(plan)
        return {tp: pp * int(plan["ray_cluster"]["clusters"])}

    def manifests(self, plan: dict) -> list[dict]:
        return render_kserve.manifests(plan, self.cfg)

    def _preflight(self, plan: dict) -> dict:
        for api_version, kind in KINDS:
            try:
                self.client.list(api_version, kind, self.ns)
            except NotFoundError as exc:
                raise InvalidInputError(
                    f"backend kserve needs KServe, but the cluster serves no {kind} "
                    f"({api_version}): install Red Hat OpenShift AI or Open Data Hub with "
                    "KServe managed (the gpu_operators role: gpu_operators_serving_platform), or "
                    "use backend ray") from exc
        return super()._preflight(plan)

    def isvcs(self) -> list[dict]:
        return serving_objects.inference_services(self.client, self.ns, self.name)

    def apply(self, plan: dict, check_mode: bool) -> tuple[bool, dict]:
        ns_obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns}}
        changed, diffs = self.apply_objects([ns_obj, *self.manifests(plan)], check_mode)
        wanted = set(render_kserve.isvc_names(self.name, plan))
        stale = [i["metadata"]["name"] for i in self.isvcs()
                 if i["metadata"]["name"] not in wanted]
        changed |= self.delete_all(serving_objects.isvc_targets(stale), check_mode, diffs)
        # a model moved from another backend: its RayClusters or Deployment go
        changed |= self.delete_all([*self.ray_targets(), *self.deployment_targets()],
                                   check_mode, diffs)
        return changed, diffs

    def rolled(self, diffs: dict) -> list[str]:
        """The InferenceServices whose spec, or whose runtime's, this run changed."""
        def _changed(key: str) -> bool:
            diff = diffs.get(key)
            return bool(diff and diff["before"] and diff["after"]
                        and diff["before"].get("spec") != diff["after"].get("spec"))

        runtime = _changed(f"ServingRuntime/{self.name}")
        return sorted(key.split("/", 1)[1] for key in diffs
                      if key.startswith("InferenceService/")
                      and (runtime or _changed(key)) and diffs[key]["before"])

    def _isvc_status(self, name: str, isvc: dict, heads: list[dict]) -> tuple[bool, str]:
        for head in heads:
            self.raise_launcher_failure(head, f"the head of {self.ns}/{name}")
        status = isvc.get("status") or {}
        current = status.get("observedGeneration", 0) >= (isvc.get("metadata") or {}).get(
            "generation", 1)
        ready = _condition(isvc, "Ready")
        done = current and ready.get("status") == "True"
        detail = "Ready" if done else (ready.get("message") or ready.get("reason")
                                       or "waiting for KServe")
        return done, f"{name}: {detail}"

    def wait(self, plan: dict, timeout: float, progress=None, check_mode: bool = False) -> dict:
        names = render_kserve.isvc_names(self.name, plan)
        what = f"the InferenceServices of {self.ns}/{self.name}"
        faults = PodFaults()

        def _step() -> tuple[list, list]:
            pods = self.client.list("v1", "Pod", self.ns,
                                    label_selector=f"app.kubernetes.io/instance={self.name}")
            faults.check(pods, what)
            isvcs = {i["metadata"]["name"]: i for i in self.isvcs()}  # one read per poll
            ready, lines = [], []
            for name in names:
                heads = [p for p in pods if (p["metadata"].get("labels") or {}).get(
                    render_kserve.ISVC_LABEL) == name and p["metadata"]["labels"].get(
                    render_kserve.COMPONENT_LABEL) == "vllm-head"]
                done, line = self._isvc_status(name, isvcs.get(name) or {}, heads)
                lines.append(line)
                if done:
                    ready.append(name)
            return ready, lines

        return self.wait_parts(names, _step, what, timeout, progress, check_mode)
