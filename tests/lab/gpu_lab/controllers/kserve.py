"""KServe in RawDeployment mode, multi-node: an InferenceService whose predictor has a
``workerSpec`` becomes what KServe's controller makes of it (read from kserve's
``pkg/controller/v1beta1/inferenceservice``: ``components/predictor.go``, the deployment
and service reconcilers, and the storage initializer's direct PVC mount):

- the ServingRuntime ``predictor.model.runtime`` gives the head container
  (``kserve-container``) and ``workerSpec`` the worker container (``worker-container``);
  the pipeline and tensor parallel sizes are the InferenceService's ``workerSpec`` over
  the runtime's (default 1);
- GPUs (Ray mode): ``total = TP x PP``; with a worker GPU request ``W`` the node count is
  ``ceil(total / W)`` and the head gets ``total - W x (nodes - 1)`` (a head request of its
  own must add up, else ``InvalidGPUAllocation``); without any GPU request every node gets
  one GPU. The counts become the containers' ``nvidia.com/gpu`` limits;
- environment: the head gets ``PIPELINE_PARALLEL_SIZE``, ``TENSOR_PARALLEL_SIZE``,
  ``RAY_NODE_COUNT``, ``REQUEST_GPU_COUNT``, ``MODEL_NAME`` and ``MODEL_DIR``; the workers
  ``RAY_NODE_COUNT``, ``REQUEST_GPU_COUNT``, ``ISVC_NAME``, ``HEAD_SVC`` and the sizes;
- ``storageUri: pvc://<claim>/<path>``: volume ``kserve-pvc-source`` mounted read-only at
  ``/mnt/models`` with ``subPath: <path>`` in both containers;
- labels: the runtime's pod labels, the InferenceService's and the predictor's on the
  head; ``workerSpec.labels`` instead of the runtime's on the workers; KServe's own
  (``serving.kserve.io/inferenceservice``, ``component: predictor``,
  ``app: isvc.<name>-predictor[-worker]``) on both; the predictor's annotations on both;
- objects (owned by the InferenceService, so deleting it deletes them): Deployments
  ``<name>-predictor`` (1 replica) and ``<name>-predictor-worker`` (``nodes - 1``), the
  Service ``<name>-predictor`` (port 80 to the head's first container port) and the
  headless ``<name>-head-<generation>`` (``HEAD_SVC``) on the GCS port;
- status: ``PredictorReady`` when both Deployments are available, ``IngressReady``, and
  ``Ready`` when both are; ``observedGeneration``, ``url`` and ``address.url`` (the
  predictor Service's cluster name).

Lab only: every Ray head of the machine shares one network (ray_ports.py), so each head
gets a machine-unique GCS port, kept as an annotation of its head Deployment, given to
the head as ``RAY_PORT`` and mapped from 6379 by the headless Service. InferenceServices
without ``workerSpec`` (single-node predictors) are not simulated: their status says so.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from typing import Any

from kubernetes.utils import parse_quantity

from . import ray_ports
from .base import Controller, condition, owned_by, owner_ref

GROUP = "serving.kserve.io"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
GPU = "nvidia.com/gpu"
MOUNT = "/mnt/models"
PVC_VOLUME = "kserve-pvc-source"
GCS_PORT = 6379
PORT_ANNOTATION = "gpu-lab.llmops.io/gcs-port"
# the hash of the pod template this controller last wrote (the stored template carries
# the API server's defaults, so it is never compared itself)
TEMPLATE_ANNOTATION = "gpu-lab.llmops.io/template-sha256"


class AllocationError(Exception):
    pass


def _gpus(container: dict[str, Any]) -> int:
    res = container.get("resources") or {}
    value = (res.get("limits") or {}).get(GPU) or (res.get("requests") or {}).get(GPU)
    return int(parse_quantity(value)) if value is not None else 0


def allocate(tp: int, pp: int, head: int, worker: int) -> tuple[int, int, int]:
    """(nodes, head GPUs, worker GPUs) of KServe's Ray mode (module docstring)."""
    total = tp * pp
    if not worker:
        return (total, 1, 1) if not head else (total - head + 1, head, 1)
    nodes = max(1, math.ceil(total / worker))
    if head and head >= total:
        return 1, total, worker
    if head and head + worker * (nodes - 1) != total:
        raise AllocationError(f"the total required number of GPUs({total}) is less than the "
                              f"number of GPUs assigned to the head node({head}) + worker "
                              f"node({worker})")
    return nodes, total - worker * (nodes - 1), worker


def _env(container: dict[str, Any], values: dict[str, str]) -> None:
    env = [e for e in container.get("env") or [] if e["name"] not in values]
    container["env"] = env + [{"name": k, "value": v} for k, v in values.items()]


def _set_gpus(container: dict[str, Any], gpus: int) -> None:
    res = container.setdefault("resources", {})
    res.setdefault("limits", {})[GPU] = gpus
    if GPU in (res.get("requests") or {}):
        res["requests"][GPU] = gpus


def _deployment_ready(dep: dict[str, Any] | None) -> bool:
    if dep is None:
        return False
    want = dep["spec"].get("replicas", 1)
    status = dep.get("status") or {}
    return (status.get("observedGeneration", 0) >= dep["metadata"].get("generation", 1)
            and status.get("availableReplicas", 0) >= want
            and status.get("updatedReplicas", 0) >= want)


class InferenceServiceController(Controller):
    name = "kserve-controller-manager"
    watches = ((GROUP, "inferenceservices"), (GROUP, "servingruntimes"),
               ("apps", "deployments"))

    def reconcile(self) -> float | None:
        deployments = self.list("apps", "deployments")
        for isvc in self.list(GROUP, "inferenceservices"):
            if not isvc["metadata"].get("deletionTimestamp"):
                self._sync(isvc, [d for d in deployments if owned_by(d, isvc)])
        return None

    def _sync(self, isvc: dict[str, Any], owned: list[dict[str, Any]]) -> None:
        predictor = isvc["spec"].get("predictor") or {}
        model = predictor.get("model") or {}
        ns, name = isvc["metadata"]["namespace"], isvc["metadata"]["name"]
        if predictor.get("workerSpec") is None:
            return self._status(isvc, None, None, "NotSimulated",
                                "the lab simulates multi-node predictors (workerSpec) only")
        runtime = self.get(GROUP, "servingruntimes", ns, model.get("runtime") or "")
        if runtime is None or not (runtime["spec"].get("workerSpec") or {}).get("containers"):
            return self._status(isvc, None, None, "InvalidWorkerSpecNotSet",
                                "No workerSpec container configuration found in selected "
                                "serving runtime")
        sizes = {"pipelineParallelSize": 1, "tensorParallelSize": 1,
                 **{k: v for k, v in (runtime["spec"]["workerSpec"]).items()
                    if k.endswith("ParallelSize") and v is not None},
                 **{k: v for k, v in predictor["workerSpec"].items()
                    if k.endswith("ParallelSize") and v is not None}}
        pp, tp = sizes["pipelineParallelSize"], sizes["tensorParallelSize"]
        head_c = copy.deepcopy(runtime["spec"]["containers"][0])
        worker_c = copy.deepcopy(runtime["spec"]["workerSpec"]["containers"][0])
        try:
            nodes, head_gpus, worker_gpus = allocate(tp, pp, _gpus(head_c), _gpus(worker_c))
        except AllocationError as exc:
            return self._status(isvc, None, None, "InvalidGPUAllocation", str(exc))
        generation = str(isvc["metadata"].get("generation", 1))
        head_svc = f"{name}-head-{generation}"
        heads = [d for d in owned if d["metadata"]["name"] == f"{name}-predictor"]
        port = int((heads[0]["metadata"].get("annotations") or {}).get(PORT_ANNOTATION, 0)
                   if heads else 0) or ray_ports.free_port(set())
        _set_gpus(head_c, head_gpus)
        _set_gpus(worker_c, worker_gpus)
        _env(head_c, {"PIPELINE_PARALLEL_SIZE": str(pp), "TENSOR_PARALLEL_SIZE": str(tp),
                      "RAY_NODE_COUNT": str(nodes), "REQUEST_GPU_COUNT": str(head_gpus),
                      "MODEL_NAME": name, "MODEL_DIR": MOUNT, "RAY_PORT": str(port)})
        _env(worker_c, {"RAY_NODE_COUNT": str(nodes), "REQUEST_GPU_COUNT": str(worker_gpus),
                        "ISVC_NAME": name, "HEAD_SVC": head_svc,
                        "PIPELINE_PARALLEL_SIZE": str(pp), "TENSOR_PARALLEL_SIZE": str(tp)})
        storage = model.get("storageUri") or ""
        volumes: list[dict[str, Any]] = []
        if storage.startswith("pvc://"):
            claim, _sep, sub = storage[len("pvc://"):].partition("/")
            volumes.append({"name": PVC_VOLUME, "persistentVolumeClaim": {
                "claimName": claim, "readOnly": True}})
            for c in (head_c, worker_c):
                c.setdefault("volumeMounts", []).append(
                    {"name": PVC_VOLUME, "mountPath": MOUNT, "readOnly": True, "subPath": sub})
        common = {**(isvc["metadata"].get("labels") or {}), **(predictor.get("labels") or {}),
                  ISVC_LABEL: name, "component": "predictor"}
        rt_spec, wspec = runtime["spec"], runtime["spec"]["workerSpec"]
        head = self._deployment(
            isvc, f"{name}-predictor", 1, head_c, rt_spec, volumes, predictor,
            {**(rt_spec.get("labels") or {}), **common, "app": f"isvc.{name}-predictor",
             "serving.kserve.io/inferenceservice-generation": generation},
            {PORT_ANNOTATION: str(port)})
        worker = self._deployment(
            isvc, f"{name}-predictor-worker", nodes - 1, worker_c, wspec, volumes, predictor,
            {**(wspec.get("labels") or {}), **common, "app": f"isvc.{name}-predictor-worker"},
            {})
        self._services(isvc, head_svc, head_c, port)
        return self._status(isvc, head, worker, "", "")

    def _deployment(self, isvc: dict[str, Any], dname: str, replicas: int,
                    container: dict[str, Any], pod_spec: dict[str, Any],
                    volumes: list[dict[str, Any]], predictor: dict[str, Any],
                    labels: dict[str, str], annotations: dict[str, str]) -> dict | None:
        ns = isvc["metadata"]["namespace"]
        spec = {"containers": [container],
                "volumes": [*copy.deepcopy(pod_spec.get("volumes") or []), *volumes]}
        for key in ("nodeSelector", "tolerations"):
            if pod_spec.get(key):
                spec[key] = copy.deepcopy(pod_spec[key])
        if predictor.get("serviceAccountName"):
            spec["serviceAccountName"] = predictor["serviceAccountName"]
        pod_annotations = {**(pod_spec.get("annotations") or {}),
                           **(predictor.get("annotations") or {})}
        template = {"metadata": {"labels": labels, "annotations": pod_annotations},
                    "spec": spec}
        selector = {"app": labels["app"]}
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
        current = self.get("apps", "deployments", ns, dname)
        if current is None:
            return self.create("apps", "deployments", {
                "metadata": {"name": dname, "namespace": ns, "labels": dict(labels),
                             "annotations": {**annotations, TEMPLATE_ANNOTATION: digest},
                             "ownerReferences": [owner_ref(isvc)]},
                "spec": {"replicas": replicas, "selector": {"matchLabels": selector},
                         "template": template}})
        written = (current["metadata"].get("annotations") or {}).get(TEMPLATE_ANNOTATION)
        if current["spec"].get("replicas") != replicas or written != digest:
            return self.patch("apps", "deployments", ns, dname, {
                "metadata": {"annotations": {TEMPLATE_ANNOTATION: digest}},
                "spec": {"replicas": replicas, "template": template}}) or current
        return current

    def _services(self, isvc: dict[str, Any], head_svc: str, head_c: dict[str, Any],
                  port: int) -> None:
        ns, name = isvc["metadata"]["namespace"], isvc["metadata"]["name"]
        owner = [owner_ref(isvc)]
        target = ((head_c.get("ports") or [{}])[0]).get("containerPort", 8080)
        if self.get("", "services", ns, f"{name}-predictor") is None:
            self.create("", "services", {
                "metadata": {"name": f"{name}-predictor", "namespace": ns,
                             "labels": {ISVC_LABEL: name}, "ownerReferences": owner},
                "spec": {"selector": {"app": f"isvc.{name}-predictor"},
                         "ports": [{"name": "http", "port": 80, "targetPort": target,
                                    "protocol": "TCP"}]}})
        for svc in self.list("", "services", ns):
            meta = svc["metadata"]
            if meta["name"].startswith(f"{name}-head-") and meta["name"] != head_svc and any(
                    r.get("uid") == isvc["metadata"]["uid"]
                    for r in meta.get("ownerReferences") or []):
                self.delete("", "services", ns, meta["name"])
        if self.get("", "services", ns, head_svc) is None:
            generation = head_svc.rsplit("-", 1)[1]
            self.create("", "services", {
                "metadata": {"name": head_svc, "namespace": ns,
                             "labels": {ISVC_LABEL: name, "multinode/role": "head"},
                             "ownerReferences": owner},
                "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                         "selector": {"app": f"isvc.{name}-predictor",
                                      "serving.kserve.io/inferenceservice-generation":
                                          generation},
                         "ports": [{"name": "gcs", "port": GCS_PORT, "targetPort": port,
                                    "protocol": "TCP"}]}})

    def _status(self, isvc: dict[str, Any], head: dict | None, worker: dict | None,
                reason: str, message: str) -> None:
        ns, name = isvc["metadata"]["namespace"], isvc["metadata"]["name"]
        previous = (isvc.get("status") or {}).get("conditions") or []
        predictor = not reason and _deployment_ready(head) and _deployment_ready(worker)
        why = reason or ("" if predictor else "DeploymentsNotAvailable")
        url = f"http://{name}-predictor.{ns}.svc.cluster.local"
        status = {"observedGeneration": isvc["metadata"].get("generation", 1),
                  "deploymentMode": "RawDeployment",
                  "conditions": [
                      condition("IngressReady", not reason, "", "", previous),
                      condition("PredictorReady", predictor, why, message, previous),
                      condition("Ready", predictor, why, message, previous)]}
        if not reason:
            status.update(url=url, address={"url": url})
        self.set_status(GROUP, "inferenceservices", isvc, status)
