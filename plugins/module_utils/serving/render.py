# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Render the serving objects of a plan: RayClusters, Service, Route, NetworkPolicy, SA.

One RayCluster per replica of the plan (``<name>-<i>``): replicas are independent vLLM
servers, so a failing replica never takes the others down; one Service (API port only)
selects every replica's head and the Route in front of it spreads requests over them.

Every pod runs ``gpu-stack-launch`` (the runtime image) with KubeRay's
``ray.io/overwrite-container-cmd`` annotation, so the launcher starts Ray from KubeRay's
generated command, waits for the planned GPUs and then runs vLLM (head) or keeps the Ray
worker alive (workers). Pods run as non-root without privilege escalation, get
``/dev/shm`` as a memory emptyDir, the interface variables vLLM and NCCL/GLOO need, and
the model volume read-only. Ray's ports are reachable only from pods of the same
RayCluster (and the KubeRay operator on the head's client and dashboard ports), the API
port from anywhere (``network_policy.py``); the Service and the Route carry the API port
alone. The Ray dashboard (whose Jobs API runs code unauthenticated) listens on the pod's
loopback only: reach it with ``kubectl port-forward`` when needed. Keys reach the
launcher as files of the API-key Secret's volume (``api-key``, and ``metrics-key``:
Prometheus' credential for ``GET /metrics``), never as an environment value or argument.

``handover(cfg, endpoint, plan)`` is the stage's declared output: a ConfigMap
``<name>-endpoint`` beside the serving objects recording what a later stage (validate)
needs without the facts of this run: endpoint URL, API-key Secret name, served model
name, namespace, Service, RayClusters and the layout.

The manifests are plain data: every write goes through the k8s adapter (server-side
apply, strict validation), which is also how they are checked against the real CRDs.
"""

from __future__ import annotations

import re

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common import contract
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import network_policy

API_PORT = 8000
MODEL_MOUNT = contract.MODEL_MOUNT
API_KEY_MOUNT = "/var/run/secrets/gpu-stack/api-key"
API_KEY_FILE = "api-key"  # the Secret's keys, files of its volume
METRICS_KEY_FILE = "metrics-key"
DASHBOARD_HOST = "127.0.0.1"
API_KEY_SHA256_ANNOTATION = "gpu-stack.llmops.io/api-key-sha256"  # k8s/serving_roll.py
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
_SERVED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
_IMAGE = re.compile(r"^[^\s@]+(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})$")
_LAUNCHER_FLAGS = {"--tensor-parallel-size", "--pipeline-parallel-size", "--max-model-len",
                   "--gpu-memory-utilization"}
# Chosen by the launcher itself, never rendered.
_LAUNCHER_OWNS = {"--distributed-executor-backend"}
SECURITY = {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def validate(name: str, image: str, served_model_name: str) -> None:
    if not _NAME.match(name or ""):
        raise InvalidInputError(f"name {name!r} must be a DNS label of at most 40 characters "
                                "(lower case letters, digits, '-')")
    last = (image or "").rsplit("/", 1)[-1]
    if not _IMAGE.match(image or "") or (":" not in last and "@" not in last):
        raise InvalidInputError(f"image {image!r} needs a tag or a digest (never an implicit "
                                "'latest': every pod of a cluster must run the same build)")
    if not _SERVED.match(served_model_name or ""):
        raise InvalidInputError(f"served_model_name {served_model_name!r} may only hold "
                                "letters, digits and . _ / - (it is part of the API's URLs)")


_PLAN_KEYS = ("tensor_parallel_size", "pipeline_parallel_size", "vllm_args", "ray_cluster")
_SHAPE_KEYS = ("clusters", "head_gpus", "worker_groups")
_TIMEOUT = re.compile(r"^[0-9]+(us|ms|s|m|h|d)?$")


def check_plan(plan: dict) -> dict:
    """The plan if it has what rendering reads (the serving_plan module's output)."""
    missing = [k for k in _PLAN_KEYS if k not in (plan or {})]
    missing += [f"ray_cluster.{k}" for k in _SHAPE_KEYS
                if k not in ((plan or {}).get("ray_cluster") or {})]
    if missing:
        raise InvalidInputError("plan is not a serving_plan result (missing "
                                f"{', '.join(missing)}): pass the module's 'plan' value")
    return plan


def check_settings(cfg: dict) -> None:
    if not _TIMEOUT.match(str(cfg.get("route_timeout", ""))):
        raise InvalidInputError(f"route_timeout {cfg.get('route_timeout')!r} must be a number "
                                "with an optional unit (us, ms, s, m, h, d), e.g. 600s")
    for key in ("head_resources", "worker_resources"):
        if not (cfg.get(key) or {}).get("memory"):
            raise InvalidInputError(f"{key} needs a memory request (it is also the limit)")
    if "dashboard-host" in (cfg.get("head_ray_params") or {}):
        raise InvalidInputError(
            "head_ray_params may not set dashboard-host: the Ray dashboard (its Jobs API "
            f"runs code without authentication) listens on {DASHBOARD_HOST} only; use "
            "kubectl port-forward to reach it")


def launcher_args(plan: dict, extra: list) -> tuple[list[str], list[str]]:
    """Split the plan's vLLM arguments (then ``extra``) into the launcher's own options
    and the rest; the executor backend is the launcher's call."""
    own, rest, args = [], [], [*plan["vllm_args"], *extra]
    while args:
        flag = args.pop(0)
        value = args.pop(0) if args and not args[0].startswith("--") else None
        if flag in _LAUNCHER_OWNS:
            continue
        target = own if flag in _LAUNCHER_FLAGS else rest
        target += [flag] if value is None else [flag, value]
    return own, rest


def container_env(head_gpus: int | None, extra: dict) -> list[dict]:
    """POD_IP from the downward API: the launcher derives VLLM_HOST_IP and the NCCL/Gloo
    interface from it (the interface holding that address, never a guessed name)."""
    env = [{"name": contract.POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    if head_gpus == 0:
        env.append({"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"})
    env += [{"name": k, "value": str(v)} for k, v in sorted(extra.items())]
    return env


def pod_volumes(pvc: str, shm: str, api_key_secret: str | None) -> list[dict]:
    volumes = [{"name": "models", "persistentVolumeClaim": {"claimName": pvc, "readOnly": True}},
               {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}}]
    if api_key_secret:
        volumes.append({"name": "api-key", "secret": {"secretName": api_key_secret}})
    return volumes


def volume_mounts(api_key: bool) -> list[dict]:
    mounts = [{"name": "models", "mountPath": MODEL_MOUNT, "readOnly": True},
              {"name": "dshm", "mountPath": "/dev/shm"}]
    if api_key:
        mounts.append({"name": "api-key", "mountPath": API_KEY_MOUNT, "readOnly": True})
    return mounts


def _params(params: dict | None) -> dict:
    """rayStartParams are strings in the CRD."""
    return {str(k): str(v) for k, v in (params or {}).items()}


def pod_spec(container: dict, volumes: list, cfg: dict, gpu_pod: bool) -> dict:
    """A serving pod's spec: non-root, the ServiceAccount, GPU pods pinned to the GPU
    nodes (``node_selector``, ``tolerations``)."""
    spec = {"serviceAccountName": cfg["service_account"], "containers": [container],
            "volumes": volumes,
            "securityContext": {"runAsNonRoot": True,
                                "seccompProfile": {"type": "RuntimeDefault"}}}
    if gpu_pod and cfg.get("node_selector"):
        spec["nodeSelector"] = dict(cfg["node_selector"])
    if gpu_pod and cfg.get("tolerations"):
        spec["tolerations"] = list(cfg["tolerations"])
    return spec


def health_probes(cfg: dict) -> dict:
    """vLLM's readiness and startup probes on ``/health`` (open without a key)."""
    return {"readinessProbe": {"httpGet": {"path": "/health", "port": API_PORT},
                               "periodSeconds": 10, "failureThreshold": 3},
            "startupProbe": {"httpGet": {"path": "/health", "port": API_PORT},
                             "periodSeconds": 10, "failureThreshold": cfg["startup_checks"]}}


def key_args(cfg: dict) -> list[str]:
    """The launcher's options naming the key files of the API-key Secret's volume."""
    if not cfg.get("api_key_secret"):
        return []
    return ["--api-key-file", f"{API_KEY_MOUNT}/{API_KEY_FILE}",
            "--metrics-key-file", f"{API_KEY_MOUNT}/{METRICS_KEY_FILE}"]


def _template(labels: dict, container: dict, volumes: list, cfg: dict, gpu_pod: bool) -> dict:
    return {"metadata": {"labels": labels,
                         "annotations": {"ray.io/overwrite-container-cmd": "true"}},
            "spec": pod_spec(container, volumes, cfg, gpu_pod)}


def ray_cluster(plan: dict, cfg: dict, index: int) -> dict:
    """The RayCluster of replica ``index``."""
    shape = plan["ray_cluster"]
    name = f"{cfg['name']}-{index}"
    labels = {"app.kubernetes.io/name": "ray-vllm", "app.kubernetes.io/instance": cfg["name"],
              "app.kubernetes.io/part-of": "llmops-gpu-stack"}
    own, rest = launcher_args(plan, list(cfg.get("extra_vllm_args") or []))
    head_args = ["head", "--model-dir", f"{MODEL_MOUNT}/{cfg['model_dir']}",
                 "--served-model-name", cfg["served_model_name"], "--host", "0.0.0.0",
                 "--port", str(API_PORT), *own]
    head_args += key_args(cfg)
    if rest:
        head_args += ["--", *rest]
    head_gpus = shape["head_gpus"]
    head_env = dict(cfg.get("env") or {})
    head_resources = {"requests": dict(cfg["head_resources"]),
                      "limits": {"memory": cfg["head_resources"]["memory"]}}
    if head_gpus:
        head_resources["limits"]["nvidia.com/gpu"] = head_gpus
    head = {"name": "ray-head", "image": cfg["image"], "command": ["gpu-stack-launch"],
            "args": head_args, "env": container_env(head_gpus, head_env),
            "resources": head_resources,
            # protocol given: ports are a list map keyed by (containerPort, protocol), and
            # server-side apply merges before the server defaults it (a rerun would
            # otherwise add every port a second time)
            "ports": [{"name": "gcs", "containerPort": 6379, "protocol": "TCP"},
                      {"name": "dashboard", "containerPort": 8265, "protocol": "TCP"},
                      {"name": "api", "containerPort": API_PORT, "protocol": "TCP"}],
            "volumeMounts": volume_mounts(bool(cfg.get("api_key_secret"))),
            "securityContext": SECURITY, **health_probes(cfg)}
    volumes = pod_volumes(cfg["pvc"], cfg["shm_size"], cfg.get("api_key_secret"))
    groups = []
    for group in shape["worker_groups"]:
        worker = {"name": "ray-worker", "image": cfg["image"], "command": ["gpu-stack-launch"],
                  "args": ["worker"], "env": container_env(None, cfg.get("env") or {}),
                  "securityContext": SECURITY,
                  "resources": {"requests": dict(cfg["worker_resources"]),
                                "limits": {"memory": cfg["worker_resources"]["memory"],
                                           "nvidia.com/gpu": group["gpus_per_worker"]}},
                  "volumeMounts": volume_mounts(False)}
        groups.append({"groupName": group["name"], "replicas": group["replicas"],
                       "minReplicas": group["replicas"], "maxReplicas": group["replicas"],
                       "rayStartParams": _params(cfg.get("worker_ray_params")),
                       "template": _template(labels, worker, pod_volumes(cfg["pvc"],
                                                                         cfg["shm_size"], None),
                                             cfg, gpu_pod=True)})
    head_params = {**_params(cfg.get("head_ray_params")), "dashboard-host": DASHBOARD_HOST,
                   "num-gpus": str(head_gpus)}
    head_group = {"rayStartParams": head_params,
                  "template": _template(labels, head, volumes, cfg, gpu_pod=bool(head_gpus))}
    if cfg.get("api_key_sha256"):  # the key's digest, never the key: a new key rolls the pods
        head_group["template"]["metadata"]["annotations"][API_KEY_SHA256_ANNOTATION] = cfg[
            "api_key_sha256"]
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster",
            "metadata": {"name": name, "namespace": cfg["namespace"], "labels": labels},
            "spec": {"rayVersion": cfg["ray_version"], "enableInTreeAutoscaling": False,
                     "headGroupSpec": head_group, "workerGroupSpecs": groups}}


def front(cfg: dict, selector: dict) -> list[dict]:
    """The model's Service (the API port of the pods ``selector`` picks) and its TLS edge
    Route, named ``cfg["name"]`` (the same for every backend)."""
    ns, name = cfg["namespace"], cfg["name"]
    route = {"to": {"kind": "Service", "name": name}, "port": {"targetPort": "api"},
             "tls": {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}}
    if cfg.get("route_host"):
        route["host"] = cfg["route_host"]
    return [{"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": name, "namespace": ns},
             "spec": {"selector": selector,
                      "ports": [{"name": "api", "port": API_PORT, "targetPort": API_PORT,
                                 "protocol": "TCP"}]}},
            {"apiVersion": "route.openshift.io/v1", "kind": "Route",
             "metadata": {"name": name, "namespace": ns, "annotations": {
                 "haproxy.router.openshift.io/timeout": cfg["route_timeout"]}},
             "spec": route}]


def manifests(plan: dict, cfg: dict) -> list[dict]:
    """Everything the serving stage applies, in order."""
    validate(cfg["name"], cfg["image"], cfg["served_model_name"])
    check_settings(cfg)
    check_plan(plan)
    ns, name = cfg["namespace"], cfg["name"]
    selector = {"app.kubernetes.io/instance": name, "ray.io/node-type": "head"}
    out = [{"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": cfg["service_account"], "namespace": ns}}]
    out += [ray_cluster(plan, cfg, i) for i in range(plan["ray_cluster"]["clusters"])]
    out += front(cfg, selector)
    clusters = [f"{name}-{i}" for i in range(plan["ray_cluster"]["clusters"])]
    out += network_policy.policies(cfg, clusters, API_PORT)
    return out


HANDOVER_SUFFIX = "-endpoint"


def handover_name(name: str) -> str:
    """Name of the serving stage's hand-over ConfigMap."""
    return f"{name}{HANDOVER_SUFFIX}"


def handover(cfg: dict, endpoint: str | None, plan: dict, backend: str = "ray") -> dict:
    """The ConfigMap recording the serving stage's outputs for later stages: ``backend``
    says which objects serve (``clusters``: the RayClusters of ``ray``; ``deployment``:
    the Deployment of ``deployment``; the other one empty; ``kserve`` adds
    ``inference_services``, one per replica, and leaves both empty)."""
    name, replicas = cfg["name"], plan["ray_cluster"]["clusters"]
    clusters = ",".join(f"{name}-{i}" for i in range(replicas)) if backend == "ray" else ""
    data = {"endpoint": endpoint or "", "api_key_secret": cfg.get("api_key_secret") or "",
            "served_model_name": cfg["served_model_name"], "namespace": cfg["namespace"],
            "service": name, "route": name, "backend": backend, "clusters": clusters,
            "deployment": name if backend == "deployment" else "",
            "tensor_parallel_size": str(plan["tensor_parallel_size"]),
            "pipeline_parallel_size": str(plan["pipeline_parallel_size"]),
            "replicas": str(replicas)}
    if backend == "kserve":
        data["inference_services"] = ",".join(f"{name}-{i}" for i in range(replicas))
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": handover_name(name), "namespace": cfg["namespace"],
                         "labels": {"app.kubernetes.io/instance": name,
                                    "app.kubernetes.io/component": "serving-handover",
                                    "app.kubernetes.io/part-of": "llmops-gpu-stack"}},
            "data": data}
