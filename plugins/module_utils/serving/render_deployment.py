# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Render the serving objects of the ``deployment`` backend: plain vLLM pods, no Ray.

For a model whose replica fits one node (the planner's ``deployment`` backend: PP 1, TP
at most the GPUs of a node), every replica is one pod running ``gpu-stack-launch serve``:
the launcher's checks (options, API key file, model marker), then vLLM's OpenAI server
on its multiprocessing executor with every GPU of the replica inside the pod. No Ray
head, no Ray ports, no CPU head pod per replica.

One Deployment ``<name>`` with ``replicas`` = the plan's replicas, not one per replica:
the pods of a replica-per-pod model are interchangeable (no head, no peers), so the
Deployment controller is what keeps them: it replaces a failed pod, and a new pod
template (a new API key's digest, a new image, new arguments) rolls the pods one at a
time (``maxSurge`` 0: a roll never needs a spare GPU; ``maxUnavailable`` 1: with
several replicas the others keep serving). The Ray backend needs one RayCluster per
replica only because its replica is several pods tied to one head.

The rest follows ``render.py``, whose helpers this module shares: the same Service and
TLS Route (``render.front``) named ``<name>``, the same ServiceAccount, pod security,
model volume (read-only), memory ``/dev/shm``, key files of the API-key Secret's volume
(never an environment value), ``POD_IP`` for the launcher's network variables and the
key's SHA-256 as a pod-template annotation. One NetworkPolicy ``<name>-api`` selects the
model's pods and admits the API port alone, from anywhere (the launcher's key check
guards every path but ``/health``); nothing else reaches them. The pods' resources are
``worker_resources`` (the requests; memory also the limit) plus the replica's GPUs.
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import (
    network_policy as netpol,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import render, render_kserve

BACKENDS = ("ray", "deployment", "kserve")
COMPONENT = "vllm-server"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"


def policy_name(name: str) -> str:
    """Name of the NetworkPolicy of a ``deployment`` model's pods."""
    return f"{name}-api"


def selector(name: str) -> dict:
    """The labels that pick a ``deployment`` model's pods (Deployment, Service, policy)."""
    return {INSTANCE_LABEL: name, COMPONENT_LABEL: COMPONENT}


def gpus_per_pod(plan: dict) -> int:
    return int(plan["tensor_parallel_size"]) * int(plan["pipeline_parallel_size"])


def replicas(plan: dict) -> int:
    return int(plan["ray_cluster"]["clusters"])


def check_plan(plan: dict) -> dict:
    """The plan if one replica fits one pod on one node."""
    render.check_plan(plan)
    nodes = int(plan.get("nodes_per_replica") or 1)
    if nodes > 1:
        raise InvalidInputError(
            f"backend 'deployment' serves a replica inside one pod, but this plan's replica "
            f"spans {nodes} nodes (TP {plan['tensor_parallel_size']} x PP "
            f"{plan['pipeline_parallel_size']}): use backend 'ray'")
    return plan


def _container(plan: dict, cfg: dict) -> dict:
    own, rest = render.launcher_args(plan, list(cfg.get("extra_vllm_args") or []))
    args = ["serve", "--model-dir", f"{render.MODEL_MOUNT}/{cfg['model_dir']}",
            "--served-model-name", cfg["served_model_name"], "--host", "0.0.0.0",
            "--port", str(render.API_PORT), *own, *render.key_args(cfg)]
    if rest:
        args += ["--", *rest]
    resources = cfg["worker_resources"]
    return {"name": "vllm", "image": cfg["image"], "command": ["gpu-stack-launch"],
            "args": args, "env": render.container_env(gpus_per_pod(plan), cfg.get("env") or {}),
            "resources": {"requests": dict(resources),
                          "limits": {"memory": resources["memory"],
                                     "nvidia.com/gpu": gpus_per_pod(plan)}},
            "ports": [{"name": "api", "containerPort": render.API_PORT, "protocol": "TCP"}],
            "volumeMounts": render.volume_mounts(bool(cfg.get("api_key_secret"))),
            "securityContext": render.SECURITY, **render.health_probes(cfg)}


def deployment(plan: dict, cfg: dict) -> dict:
    """The model's Deployment: ``replicas`` pods of TP x PP GPUs each."""
    name = cfg["name"]
    labels = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/part-of": "llmops-gpu-stack",
              **selector(name)}
    template = {"metadata": {"labels": dict(labels)},
                "spec": render.pod_spec(_container(plan, cfg),
                                        render.pod_volumes(cfg["pvc"], cfg["shm_size"],
                                                           cfg.get("api_key_secret")),
                                        cfg, gpu_pod=True)}
    if cfg.get("api_key_sha256"):  # the key's digest, never the key: a new key rolls the pods
        template["metadata"]["annotations"] = {
            render.API_KEY_SHA256_ANNOTATION: cfg["api_key_sha256"]}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": cfg["namespace"], "labels": labels},
            "spec": {"replicas": replicas(plan), "selector": {"matchLabels": selector(name)},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
                     "template": template}}


def network_policy(cfg: dict) -> dict:
    """The API port of the model's pods from anywhere; nothing else reaches them."""
    return netpol.policy(
        policy_name(cfg["name"]), cfg, selector(cfg["name"]),
        [{"ports": [{"protocol": "TCP", "port": render.API_PORT}]}])


def manifests(plan: dict, cfg: dict) -> list[dict]:
    """Everything the ``deployment`` backend applies, in order."""
    render.validate(cfg["name"], cfg["image"], cfg["served_model_name"])
    if not (cfg.get("worker_resources") or {}).get("memory"):
        raise InvalidInputError("worker_resources needs a memory request (it is also the limit)")
    render.check_settings(cfg)
    check_plan(plan)
    out = [{"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": cfg["service_account"], "namespace": cfg["namespace"]}},
           deployment(plan, cfg)]
    out += render.front(cfg, selector(cfg["name"]))
    out.append(network_policy(cfg))
    return out


def render_manifests(backend: str, plan: dict, cfg: dict) -> list[dict]:
    """The serving objects of ``backend`` (``ray``: ``render.manifests``; ``kserve``:
    ``render_kserve.manifests``)."""
    if backend not in BACKENDS:
        raise InvalidInputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "kserve":
        return render_kserve.manifests(plan, cfg)
    return manifests(plan, cfg) if backend == "deployment" else render.manifests(plan, cfg)
