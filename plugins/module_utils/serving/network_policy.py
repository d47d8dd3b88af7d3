# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The NetworkPolicies of a serving release: Ray's ports stay private to their RayCluster.

Ray authenticates nothing: whoever reaches a node's GCS (6379), Ray client (10001),
dashboard (8265), dashboard agent, node/object manager or worker ports can run code in
that cluster. Those ports are partly random, so they are not listed one by one; instead
the pods of a RayCluster admit each other on every port and nobody else does.
NetworkPolicies are additive (a connection is allowed when any policy selecting the
destination allows it), so the rules are split by what they select:

- ``<cluster>-peers``, one per RayCluster (``<name>-<i>``): selects that cluster's pods
  (KubeRay's ``ray.io/cluster`` label together with the release's
  ``app.kubernetes.io/instance``) and admits, on every port, only pods carrying the same
  two labels. Another replica of the same release is another RayCluster and is refused,
  as are other releases, the stager's Job and any other pod.
- ``<name>-ray``, one per release: selects the release's heads and admits
  - the API port from anywhere (the router, in-cluster clients, Prometheus): the
    launcher's key check guards every path but ``/health``, and Prometheus scrapes
    vLLM's ``/metrics`` there with its own metrics key;
  - the KubeRay operator (pods labelled ``kuberay_operator_pod_labels`` in the namespace
    ``kuberay_operator_namespace``, matched by its immutable
    ``kubernetes.io/metadata.name`` label) on the head's dashboard and Ray client
    ports, the two ports KubeRay's own generated NetworkPolicy opens to its operator
    (RayJob and RayService talk to the head there; the RayCluster controller itself
    opens no connection to the pods). An empty namespace drops that rule.

Ray's own metrics export port (8080) gets no rule: nothing of the product scrapes it,
and a site that wants it adds its own policy next to these. The dashboard additionally
listens on the pod's loopback only (``render``'s ``dashboard-host``), so its Jobs API is
out of reach of other pods even of the same cluster.
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)

INSTANCE_LABEL = "app.kubernetes.io/instance"
CLUSTER_LABEL = "ray.io/cluster"  # KubeRay puts it on every pod of a RayCluster
NODE_TYPE_LABEL = "ray.io/node-type"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DASHBOARD_PORT = 8265
CLIENT_PORT = 10001
DEFAULT_OPERATOR = {"namespace": "kuberay-operator",
                    "pod_labels": {"app.kubernetes.io/component": "kuberay-operator"}}
_HEAD_PORT_PARAMS = (("dashboard-port", DASHBOARD_PORT),
                     ("ray-client-server-port", CLIENT_PORT))


def peers_policy_name(cluster: str) -> str:
    """Name of the NetworkPolicy keeping ``cluster``'s ports to its own pods."""
    return f"{cluster}-peers"


def release_policy_name(name: str) -> str:
    """Name of the release's NetworkPolicy for its heads (API port, operator)."""
    return f"{name}-ray"


def operator_setting(cfg: dict) -> dict:
    """The KubeRay operator peer: ``kuberay_operator_namespace`` (None: the default, ""
    no operator rule) and ``kuberay_operator_pod_labels`` (None: the default)."""
    namespace = cfg.get("kuberay_operator_namespace")
    labels = cfg.get("kuberay_operator_pod_labels")
    if namespace is None:
        namespace = DEFAULT_OPERATOR["namespace"]
    if labels is None:
        labels = DEFAULT_OPERATOR["pod_labels"]
    if namespace and not (isinstance(labels, dict) and labels):
        raise InvalidInputError(
            "kuberay_operator_pod_labels must name the operator's pod labels (an empty "
            "selector would admit every pod of its namespace)")
    return {"namespace": namespace, "pod_labels": {str(k): str(v) for k, v in labels.items()}}


def _head_ports(cfg: dict) -> list[dict]:
    """The head's dashboard and client ports (``head_ray_params`` may move them)."""
    params, ports = cfg.get("head_ray_params") or {}, []
    for param, default in _HEAD_PORT_PARAMS:
        value = str(params.get(param, default))
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise InvalidInputError(f"head_ray_params {param}={value!r} is not a port number")
        ports.append({"protocol": "TCP", "port": int(value)})
    return ports


def policy(name: str, cfg: dict, selector: dict, ingress: list[dict]) -> dict:
    """A NetworkPolicy of the release ``cfg["name"]``: ``ingress`` rules for the pods
    ``selector`` picks (every backend's policies have this shape)."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": cfg["namespace"],
                         "labels": {INSTANCE_LABEL: cfg["name"],
                                    "app.kubernetes.io/part-of": "llmops-gpu-stack"}},
            "spec": {"podSelector": {"matchLabels": selector},
                     "policyTypes": ["Ingress"], "ingress": ingress}}


def policies(cfg: dict, clusters: list[str], api_port: int) -> list[dict]:
    """The release's NetworkPolicies: one per RayCluster in ``clusters``, then the
    release's own (heads: API port from anywhere, the operator on its two ports)."""
    out = []
    for cluster in clusters:
        members = {INSTANCE_LABEL: cfg["name"], CLUSTER_LABEL: cluster}
        out.append(policy(peers_policy_name(cluster), cfg, members,
                          [{"from": [{"podSelector": {"matchLabels": dict(members)}}]}]))
    ingress = [{"ports": [{"protocol": "TCP", "port": api_port}]}]
    operator = operator_setting(cfg)
    if operator["namespace"]:
        namespace = {"matchLabels": {NAMESPACE_NAME_LABEL: operator["namespace"]}}
        source = {"namespaceSelector": namespace,
                  "podSelector": {"matchLabels": operator["pod_labels"]}}
        ingress.append({"from": [source], "ports": _head_ports(cfg)})
    heads = {INSTANCE_LABEL: cfg["name"], NODE_TYPE_LABEL: "head"}
    out.append(policy(release_policy_name(cfg["name"]), cfg, heads, ingress))
    return out
