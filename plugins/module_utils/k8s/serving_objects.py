# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Which objects each serving backend owns for one model, and their removal.

A model (``name``) is served by the Ray backend (its RayClusters ``<name>-<i>``, their
``<name>-<i>-peers`` NetworkPolicies and the release's ``<name>-ray`` policy), by the
``deployment`` backend (the Deployment ``<name>`` and its ``<name>-api`` policy) or by
the ``kserve`` backend (the ServingRuntime ``<name>``, the InferenceServices
``<name>-<i>``, their ``<name>-<i>-peers`` policies and the ``<name>-kserve`` policy);
the Service, the Route, the API-key Secret and the hand-over ConfigMap are shared.
Applying one backend deletes the others' objects (a model switched backends); removal
deletes all of them.
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    NotFoundError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import (
    network_policy,
    render_deployment,
    render_kserve,
)


def _listed(client, namespace: str, name: str, api_version: str, kind: str) -> list[dict]:
    """The model's objects of ``kind`` (none where the namespace or the kind is missing:
    no operator installed, no object of ours either)."""
    if client.get("v1", "Namespace", namespace) is None:
        return []
    try:
        return client.list(api_version, kind, namespace,
                           label_selector=f"app.kubernetes.io/instance={name}")
    except NotFoundError:
        return []


def ray_clusters(client, namespace: str, name: str) -> list[dict]:
    """The model's RayClusters (none where the namespace or KubeRay's CRD is missing)."""
    return _listed(client, namespace, name, "ray.io/v1", "RayCluster")


def ray_targets(client, namespace: str, name: str) -> list[tuple]:
    """The Ray backend's own objects of the model (not the shared ones)."""
    clusters = [c["metadata"]["name"] for c in ray_clusters(client, namespace, name)]
    return ([("ray.io/v1", "RayCluster", c) for c in clusters]
            + [("networking.k8s.io/v1", "NetworkPolicy", network_policy.peers_policy_name(c))
               for c in clusters]
            + [("networking.k8s.io/v1", "NetworkPolicy",
                network_policy.release_policy_name(name))])


def deployment_targets(name: str) -> list[tuple]:
    """The deployment backend's own objects of the model."""
    return [("apps/v1", "Deployment", name),
            ("networking.k8s.io/v1", "NetworkPolicy", render_deployment.policy_name(name))]


def inference_services(client, namespace: str, name: str) -> list[dict]:
    """The model's InferenceServices (none where the namespace or KServe is missing)."""
    return _listed(client, namespace, name, "serving.kserve.io/v1beta1", "InferenceService")


def isvc_targets(isvcs: list[str]) -> list[tuple]:
    """Those InferenceServices and their peer policies."""
    return ([("serving.kserve.io/v1beta1", "InferenceService", i) for i in isvcs]
            + [("networking.k8s.io/v1", "NetworkPolicy", network_policy.peers_policy_name(i))
               for i in isvcs])


def kserve_targets(client, namespace: str, name: str) -> list[tuple]:
    """The kserve backend's own objects of the model (none where KServe is missing)."""
    isvcs = [i["metadata"]["name"] for i in inference_services(client, namespace, name)]
    if not isvcs:  # a runtime left without its InferenceServices still goes
        try:
            if client.get("v1", "Namespace", namespace) is None or client.get(
                    "serving.kserve.io/v1alpha1", "ServingRuntime", name, namespace) is None:
                return []
        except NotFoundError:  # no KServe
            return []
    return [*isvc_targets(isvcs), ("serving.kserve.io/v1alpha1", "ServingRuntime", name),
            ("networking.k8s.io/v1", "NetworkPolicy", render_kserve.api_policy_name(name))]


def delete_all(client, namespace: str, targets: list[tuple], check_mode: bool,
               diffs: dict | None = None) -> bool:
    """Delete those of ``targets`` that exist; each deletion recorded in ``diffs``."""
    changed = False
    for api_version, kind, name in targets:
        try:
            gone = client.delete(api_version, kind, name, namespace, check_mode=check_mode)
        except NotFoundError:
            continue
        if gone and diffs is not None:
            diffs[f"{kind}/{name}"] = {"before": {"name": name}, "after": {}}
        changed |= gone
    return changed
