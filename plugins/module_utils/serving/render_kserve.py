# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Render the serving objects of the ``kserve`` backend: KServe's multi-node vLLM.

The Red Hat OpenShift AI / Open Data Hub way (KServe in RawDeployment mode): one
ServingRuntime ``<name>`` per model, holding this collection's launcher as both of its
containers, and one InferenceService ``<name>-<i>`` per replica of the plan, each a
multi-node predictor whose ``workerSpec`` carries the plan's pipeline and tensor
parallel sizes. For each InferenceService KServe's controller makes a head Deployment
``<isvc>-predictor`` (container ``kserve-container``) and a worker Deployment
``<isvc>-predictor-worker`` (container ``worker-container``) and mounts
``storageUri: pvc://<claim>/<model_dir>`` read-only at ``/mnt/models`` in both.

How the plan maps onto KServe's multi-node rules (KServe 0.15.1 and later; RHOAI 2.25
and later):

- KServe's Ray mode counts ``RAY_NODE_COUNT = ceil(TP x PP / worker GPUs)`` and gives
  the head the GPUs the workers leave over. Head and worker both ask ``TP`` GPUs, so a
  replica is ``PP`` pods of ``TP`` GPUs each: pipeline stage ``i`` on pod ``i``, tensor
  parallelism inside a pod, as the planner lays it out (TP inside a node, PP across
  nodes). A plan whose tensor parallel group spans pods (TP larger than the GPUs of a
  pod) has no KServe shape and is refused here, as are sizes below 1 (KServe's CRD sets
  no minimum; its webhook checks only ``>= 1``).
- The head runs ``gpu-stack-launch head``: Ray's head with ``TP`` GPUs, the wait until
  the cluster holds ``TP x PP`` GPUs (with progress lines), the model marker check, the
  API key from the Secret's volume, then vLLM's OpenAI server on the Ray executor. The
  workers run ``gpu-stack-launch worker`` joining ``$(HEAD_SVC)`` (the head's headless
  Service, whose name KServe injects and changes with every InferenceService
  generation).
- Multi-node InferenceServices take no autoscaler: ``serving.kserve.io/autoscalerClass``
  is ``none`` (KServe 0.15.1+, RHOAI 2.25+); RHOAI 2.16 to 2.22 wanted ``external``
  (``autoscaler_class``). One head per InferenceService (no min/max replicas): the
  plan's replicas are separate InferenceServices, so one failing replica never stops
  the others, as with one RayCluster per replica.
- The labels KServe copies from the ServingRuntime's pod spec land on the head pods
  only (the worker pods take ``workerSpec.labels``): the model's Service ``<name>``
  selects every replica's head by them, with the same TLS Route, ServiceAccount and
  API-key Secret as the other backends. KServe's own ``<isvc>-predictor`` Services stay
  in place (in-cluster, one replica each).
- NetworkPolicies: ``<name>-<i>-peers`` admits, on every port, only the pods of the same
  InferenceService (KServe's ``serving.kserve.io/inferenceservice`` label): Ray
  authenticates nothing; ``<name>-api`` admits the API port of the heads from anywhere.
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common import contract
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import network_policy, render

BACKEND = "kserve"
KSERVE_MODEL_MOUNT = "/mnt/models"  # where KServe mounts a pvc:// storageUri
HEAD_CONTAINER = "kserve-container"  # the names KServe's controller looks for
WORKER_CONTAINER = "worker-container"
ISVC_LABEL = "serving.kserve.io/inferenceservice"  # KServe's label on every pod of an isvc
MODEL_FORMAT = "vLLM"
RAY_PORT = 6379
AUTOSCALER_CLASSES = ("none", "external")
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
_PART_OF = {"app.kubernetes.io/part-of": "llmops-gpu-stack"}


def head_selector(name: str) -> dict:
    """The labels of every replica's head pod (the model's Service and API policy)."""
    return {INSTANCE_LABEL: name, COMPONENT_LABEL: "vllm-head"}


def isvc_names(name: str, plan: dict) -> list[str]:
    return [f"{name}-{i}" for i in range(int(plan["ray_cluster"]["clusters"]))]


def api_policy_name(name: str) -> str:
    return f"{name}-kserve"


def _size(plan: dict, key: str) -> int:
    value = plan.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"backend kserve: the plan's {key} must be a whole number "
                                f">= 1 (KServe's CRD sets no minimum), got {value!r}")
    return value


def check_plan(plan: dict) -> tuple[int, int]:
    """``(TP, PP)`` of a plan KServe can serve: PP pods of TP GPUs per replica."""
    render.check_plan(plan)
    tp, pp = _size(plan, "tensor_parallel_size"), _size(plan, "pipeline_parallel_size")
    shape = plan["ray_cluster"]
    pods = [*([shape["head_gpus"]] if shape["head_gpus"] else []),
            *[g["gpus_per_worker"] for g in shape["worker_groups"]
              for _pod in range(g["replicas"])]]
    if sorted(set(pods)) != [tp] or len(pods) != pp:
        raise InvalidInputError(
            f"backend kserve runs a replica as PP pods of TP GPUs each (here {pp} pod(s) of "
            f"{tp} GPU(s)), but this plan puts TP {tp} x PP {pp} on pods of "
            f"{', '.join(map(str, pods)) or 'no'} GPU(s): a tensor parallel group may not "
            "span pods; use backend ray, or a layout with TP at most the GPUs of a node")
    return tp, pp


def check_settings(cfg: dict) -> None:
    if (cfg.get("autoscaler_class") or "none") not in AUTOSCALER_CLASSES:
        raise InvalidInputError(
            f"autoscaler_class {cfg['autoscaler_class']!r} must be one of "
            f"{', '.join(AUTOSCALER_CLASSES)} (none: KServe 0.15.1+ / RHOAI 2.25+; external: "
            "RHOAI 2.16-2.22)")
    if not (cfg.get("worker_resources") or {}).get("memory"):
        raise InvalidInputError("worker_resources needs a memory request (it is also the limit)")
    render.check_settings(cfg)


def _env(cfg: dict, tp: int) -> list[dict]:
    """The launcher's environment; its GPUs come from ``GPU_STACK_NUM_GPUS`` (not an
    argument), so the head's arguments are exactly what ``check-args`` parses."""
    env = render.container_env(None, cfg.get("env") or {})
    env[1:1] = [{"name": "POD_NAMESPACE",
                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": contract.LAUNCH_NUM_GPUS_ENV, "value": str(tp)}]
    return env


def _resources(cfg: dict, gpus: int) -> dict:
    resources = cfg["worker_resources"]
    return {"requests": dict(resources),
            "limits": {"memory": resources["memory"], "nvidia.com/gpu": gpus}}


def _head(plan: dict, cfg: dict, tp: int) -> dict:
    own, rest = render.launcher_args(plan, list(cfg.get("extra_vllm_args") or []))
    args = ["head", "--model-dir", KSERVE_MODEL_MOUNT,
            "--served-model-name", cfg["served_model_name"], "--host", "0.0.0.0",
            "--port", str(render.API_PORT), *own, *render.key_args(cfg)]
    if rest:
        args += ["--", *rest]
    return {"name": HEAD_CONTAINER, "image": cfg["image"], "command": ["gpu-stack-launch"],
            "args": args, "env": _env(cfg, tp), "resources": _resources(cfg, tp),
            # the first port is the one KServe's <isvc>-predictor Service targets
            "ports": [{"name": "api", "containerPort": render.API_PORT, "protocol": "TCP"},
                      {"name": "gcs", "containerPort": RAY_PORT, "protocol": "TCP"}],
            "volumeMounts": [m for m in render.volume_mounts(bool(cfg.get("api_key_secret")))
                             if m["name"] != "models"],
            "securityContext": render.SECURITY, **render.health_probes(cfg)}


def _worker(cfg: dict, tp: int) -> dict:
    address = f"$(HEAD_SVC).$(POD_NAMESPACE).svc:{RAY_PORT}"  # HEAD_SVC: set by KServe
    return {"name": WORKER_CONTAINER, "image": cfg["image"], "command": ["gpu-stack-launch"],
            "args": ["worker", "--ray-address", address],
            "env": _env(cfg, tp), "resources": _resources(cfg, tp),
            "volumeMounts": [m for m in render.volume_mounts(False) if m["name"] != "models"],
            "securityContext": render.SECURITY}


def _scheduling(cfg: dict) -> dict:
    out = {}
    if cfg.get("node_selector"):
        out["nodeSelector"] = dict(cfg["node_selector"])
    if cfg.get("tolerations"):
        out["tolerations"] = list(cfg["tolerations"])
    return out


def serving_runtime(plan: dict, cfg: dict) -> dict:
    """The model's ServingRuntime: the launcher as KServe's head and worker containers."""
    tp, pp = check_plan(plan)
    name = cfg["name"]
    shm = [v for v in render.pod_volumes(cfg["pvc"], cfg["shm_size"], cfg.get("api_key_secret"))
           if v["name"] != "models"]
    worker_labels = {INSTANCE_LABEL: name, COMPONENT_LABEL: "vllm-worker"}
    return {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
            "metadata": {"name": name, "namespace": cfg["namespace"],
                         "labels": {INSTANCE_LABEL: name, **_PART_OF},
                         "annotations": {
                             "opendatahub.io/recommended-accelerators": '["nvidia.com/gpu"]'}},
            "spec": {"supportedModelFormats": [{"name": MODEL_FORMAT, "autoSelect": False}],
                     "multiModel": False, "labels": head_selector(name),
                     "containers": [_head(plan, cfg, tp)],
                     "volumes": shm, **_scheduling(cfg),
                     "workerSpec": {"pipelineParallelSize": pp, "tensorParallelSize": tp,
                                    "labels": worker_labels,
                                    "containers": [_worker(cfg, tp)],
                                    "volumes": [v for v in shm if v["name"] == "dshm"],
                                    **_scheduling(cfg)}}}


def inference_service(plan: dict, cfg: dict, isvc: str) -> dict:
    """One replica: a multi-node InferenceService on the model's ServingRuntime."""
    tp, pp = check_plan(plan)
    predictor = {"serviceAccountName": cfg["service_account"],
                 "model": {"modelFormat": {"name": MODEL_FORMAT}, "runtime": cfg["name"],
                           "storageUri": f"pvc://{cfg['pvc']}/{cfg['model_dir']}"},
                 "workerSpec": {"pipelineParallelSize": pp, "tensorParallelSize": tp}}
    if cfg.get("api_key_sha256"):  # the key's digest, never the key: a new key rolls the pods
        predictor["annotations"] = {render.API_KEY_SHA256_ANNOTATION: cfg["api_key_sha256"]}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": isvc, "namespace": cfg["namespace"],
                         "labels": {INSTANCE_LABEL: cfg["name"], **_PART_OF},
                         "annotations": {
                             "serving.kserve.io/deploymentMode": "RawDeployment",
                             "serving.kserve.io/autoscalerClass":
                                 cfg.get("autoscaler_class") or "none"}},
            "spec": {"predictor": predictor}}


def network_policies(cfg: dict, isvcs: list[str]) -> list[dict]:
    """Each InferenceService's pods admit only each other; the heads' API port is open."""
    out = []
    for isvc in isvcs:
        members = {ISVC_LABEL: isvc}
        out.append(network_policy.policy(
            network_policy.peers_policy_name(isvc), cfg, members,
            [{"from": [{"podSelector": {"matchLabels": dict(members)}}]}]))
    out.append(network_policy.policy(
        api_policy_name(cfg["name"]), cfg, head_selector(cfg["name"]),
        [{"ports": [{"protocol": "TCP", "port": render.API_PORT}]}]))
    return out


def manifests(plan: dict, cfg: dict) -> list[dict]:
    """Everything the ``kserve`` backend applies, in order."""
    render.validate(cfg["name"], cfg["image"], cfg["served_model_name"])
    check_settings(cfg)
    check_plan(plan)
    isvcs = isvc_names(cfg["name"], plan)
    out = [{"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": cfg["service_account"], "namespace": cfg["namespace"]}},
           serving_runtime(plan, cfg)]
    out += [inference_service(plan, cfg, isvc) for isvc in isvcs]
    out += render.front(cfg, head_selector(cfg["name"]))
    out += network_policies(cfg, isvcs)
    return out
