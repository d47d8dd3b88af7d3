# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The serving stage's runner: decide, act, wait, record, diff, check mode.

``run(client, request, progress=None, out=None) -> result``

``request.backend`` picks how the model is served: ``ray`` (one RayCluster per replica,
``serving.RayVllmDeployment``), ``deployment`` (one Deployment of plain vLLM pods,
``serving_deployment.PlainVllmDeployment``: its controller rolls the pods for a new key
or image, reported in ``rolled``) or ``kserve`` (one multi-node InferenceService per
replica on the model's ServingRuntime, ``serving_kserve.KServeServing``: KServe's
controller rolls the pods, reported in ``rolled``). Each backend deletes the others'
objects of the same model, so switching a model's backend and rerunning leaves only the
new one; the hand-over ConfigMap records the ``backend``.

- ``state="absent"``: removes what ``present`` wrote, of any backend (RayClusters, the
  Deployment or the InferenceServices and ServingRuntime, Route, Service,
  NetworkPolicies, API-key Secret, hand-over ConfigMap).
- ``state="present"``: every input is checked and every object rendered before the
  first write (missing options, a plan that is not a ``serving_plan`` result, names,
  image, timeouts); then the preflight against the cluster (GPUs allocatable on the
  selected nodes, the ReadWriteMany model volume; warnings in check mode), the API-key
  Secret, the objects (server-side apply, dry run in check mode), the roll of the
  RayClusters whose live pods hold another API key or run another image than this run
  renders (``serving_roll``: one cluster at a time, each waited for; check mode only
  reports them in ``rolled`` and the diff, as ``Pods/<cluster>`` with the key's SHA-256
  and/or the images per ``<group>/<container>``, before and after), the wait (skipped in
  check mode by the common wait helper) and last the hand-over ConfigMap
  ``<name>-endpoint`` with the endpoint, the API-key Secret name and the served model
  (see ``render.handover``), written through the same apply path and shown in the diff.

``client`` is a ``K8sClient`` (or anything with its ``get``, ``list``, ``apply``,
``delete`` and ``logs``). ``progress(line)`` receives the wait's progress lines.
``out``, when given, is filled as the run goes, so a caller that catches an error
still has what was learnt (the progress lines, the Secret name, the preflight report).
Errors are the common types; nothing here fails a module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common import versions
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.diff import merge_diffs
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.model_dir import (
    check_model_dir,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import serving_roll
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving import (
    RayVllmDeployment,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving_deployment import (
    PlainVllmDeployment,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving_kserve import (
    KServeServing,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import (
    render,
    render_deployment,
)

STATES = ("present", "absent")
_NEEDED_FOR_PRESENT = ("plan", "image", "served_model_name", "model_dir")


@dataclass
class Request:
    """What the serving stage is asked to do (the module's parameters, parsed)."""

    namespace: str
    name: str = "llm"
    state: str = "present"
    plan: dict | None = None
    image: str | None = None
    served_model_name: str | None = None
    model_pvc: str = "models"
    model_dir: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)
    api_key_secret: str | None = None  # None: <name>-api-key; "": an open API
    service_account: str = "ray-vllm"
    node_selector: dict = field(default_factory=lambda: {"gpu-stack.llmops.io/gpu-node": "true"})
    tolerations: list = field(default_factory=list)
    head_resources: dict = field(default_factory=lambda: {"cpu": "4", "memory": "16Gi"})
    worker_resources: dict = field(default_factory=lambda: {"cpu": "8", "memory": "64Gi"})
    shm_size: str = "16Gi"
    startup_checks: int = 180
    route_host: str | None = None
    route_timeout: str = "600s"
    ray_version: str = versions.RAY
    extra_vllm_args: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    head_ray_params: dict = field(default_factory=dict)
    worker_ray_params: dict = field(default_factory=dict)
    kuberay_operator_namespace: str | None = None  # None: render's default; "": no rule
    kuberay_operator_pod_labels: dict | None = None
    backend: str = "ray"  # "deployment": plain vLLM pods, no Ray; "kserve": InferenceServices
    kserve_autoscaler_class: str = "none"  # KServe 0.15.1+ / RHOAI 2.25+; "external" before
    wait: bool = True
    wait_timeout: float = 1800
    check_mode: bool = False
    diff: bool = False

    @property
    def secret_name(self) -> str:
        return f"{self.name}-api-key" if self.api_key_secret is None else self.api_key_secret

    def config(self) -> dict:
        """The rendering configuration (``serving.render``'s ``cfg``)."""
        keys = ("namespace", "name", "image", "served_model_name", "model_dir",
                "service_account", "node_selector", "tolerations", "head_resources",
                "worker_resources", "shm_size", "startup_checks", "route_host",
                "route_timeout", "ray_version", "extra_vllm_args", "env", "head_ray_params",
                "worker_ray_params", "kuberay_operator_namespace", "kuberay_operator_pod_labels")
        cfg = {key: getattr(self, key) for key in keys}
        cfg["autoscaler_class"] = self.kserve_autoscaler_class
        cfg.update(pvc=self.model_pvc, api_key_secret=self.secret_name)
        return cfg


def _check(req: Request) -> dict | None:
    """Everything that needs no cluster, before any read or write; the plan."""
    if req.state not in STATES:
        raise InvalidInputError(f"state must be one of {', '.join(STATES)}, got {req.state!r}")
    if req.wait_timeout < 0:
        raise InvalidInputError(f"wait_timeout must not be negative, got {req.wait_timeout}")
    if req.state == "absent":
        return None
    missing = [key for key in _NEEDED_FOR_PRESENT if not getattr(req, key)]
    if missing:
        raise InvalidInputError(f"state=present needs: {', '.join(missing)}")
    check_model_dir(req.model_dir)
    plan = render.check_plan(req.plan)
    # every input problem (the backend's name included) raises here
    render_deployment.render_manifests(req.backend, plan, req.config())
    return plan


def _timed(progress):
    started = time.monotonic()

    def _line(status, _elapsed):
        line = f"+{time.monotonic() - started:.0f}s {status.progress}"
        progress(line)

    return _line


def run(client, req: Request, progress=None, out: dict | None = None) -> dict:
    """Bring the serving stage to ``req.state``; the module's result."""
    out = {} if out is None else out
    out.update(changed=False, progress=[], warnings=[], api_key_secret=req.secret_name)
    plan = _check(req)
    backend = {"deployment": PlainVllmDeployment, "kserve": KServeServing}.get(
        req.backend, RayVllmDeployment)
    svc = backend(client, req.config())
    if plan is None:
        out["changed"] = svc.remove(req.check_mode)
        return out
    return _present(svc, req, plan, out, progress)


def _present(svc: RayVllmDeployment, req: Request, plan: dict, out: dict, progress) -> dict:
    objs = svc.manifests(plan)
    out["head_args"] = _launch_args(objs)
    report = svc.preflight(plan, req.check_mode)
    out["warnings"] += report.pop("warnings")
    out.update(report, backend=svc.backend)
    ray = svc.backend == "ray"
    replicas = plan["ray_cluster"]["clusters"]
    out["clusters"] = [f"{req.name}-{i}" for i in range(replicas)] if ray else []
    secret_changed = svc.ensure_api_key(req.llm_api_key, req.check_mode)
    out["changed"] |= secret_changed
    # only pods running before this run's apply can hold an old key or image
    stale = serving_roll.stale_clusters(svc.client, req.namespace, req.name,
                                        [o for o in objs if o["kind"] == "RayCluster"],
                                        svc.cfg.get("api_key_sha256"),
                                        secret_changed) if ray else {}
    changed, diffs = svc.apply(plan, req.check_mode)
    out["changed"] |= changed

    def _record(line):
        out["progress"].append(line)
        if progress is not None:
            progress(line)

    if ray:
        out["changed"] |= _roll(svc, req, plan, stale, diffs, out, _timed(_record))
    else:  # the Deployment controller rolls its pods; the wait below waits for it
        out["rolled"] = svc.rolled(diffs)
    if req.wait:
        final = svc.wait(plan, req.wait_timeout, progress=_timed(_record),
                         check_mode=req.check_mode)
        if not final["skipped"]:
            out["status"] = final["state"]
    endpoint = svc.endpoint()
    if endpoint:
        out["endpoint"] = endpoint
    changed, record_diffs = svc.apply_objects(
        [render.handover(svc.cfg, endpoint, plan, svc.backend)], req.check_mode)
    out["changed"] |= changed
    out["handover"] = render.handover_name(req.name)
    diffs.update(record_diffs)
    if req.diff and diffs:
        out["diff"] = merge_diffs(diffs)
    return out


def _launch_args(objs: list[dict]) -> list:
    """The serving pods' ``gpu-stack-launch`` arguments (the Ray head's, the
    Deployment's vLLM container's or the ServingRuntime's head container's)."""
    for obj in objs:
        if obj["kind"] == "RayCluster":
            return obj["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["args"]
        if obj["kind"] == "Deployment":
            return obj["spec"]["template"]["spec"]["containers"][0]["args"]
        if obj["kind"] == "ServingRuntime":
            return obj["spec"]["containers"][0]["args"]
    return []


def _roll(svc: RayVllmDeployment, req: Request, plan: dict, stale: dict, diffs: dict,
          out: dict, progress) -> bool:
    """Roll the ``stale`` clusters (their live pods hold another API key or run another
    image: ``serving_roll``), one at a time; in check mode only report them. The diff
    shows the key's digest and the images, never the key."""
    out["rolled"] = list(stale)
    if not stale:
        return False
    want_workers = sum(g["replicas"] for g in plan["ray_cluster"]["worker_groups"])
    for cluster, drift in stale.items():
        diffs[f"Pods/{cluster}"] = drift
        if not req.check_mode:
            serving_roll.roll(svc.client, req.namespace, cluster, want_workers,
                              req.wait_timeout, progress=progress, wait=req.wait,
                              why=_why(drift["after"]))
    return True


def _why(after: dict) -> str:
    what = [w for key, w in (("api_key_sha256", "API key"), ("images", "image"))
            if key in after]
    return "a new " + " and ".join(what)
