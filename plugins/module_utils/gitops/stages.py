# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The stage renderers of the GitOps export: ``values -> [manifest]``, one per stage.

Each renderer calls the rendering function the stage's module applies (never a second
template set): ``gpu_nodes.node_manifest``, ``olm.operator_manifests``,
``serving_platform.exported``,
``staging.volume_manifests``, ``render_deployment.render_manifests`` (either serving
backend) and ``render.handover``.
``values`` are the options the stage's role passes its module (the export playbook
gathers them from the same role variables).

A later stage plugs in with one line in ``RENDERERS`` (for example
``"gateway": gateway_render.manifests``): a function of its values to its manifests.
A Secret is never returned (the export refuses one): a stage names the Secrets its
objects read in ``SECRET_REFS`` (see ``secrets.py``).
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.model_dir import (
    check_model_dir,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gateway import config as gw_config
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gateway import render as gw_render
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import (
    gpu_nodes,
    olm,
    serving_platform,
    staging,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.gateway_runner import (
    Request as GatewayRequest,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.gpu_nodes_runner import (
    check_taints,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving_runner import (
    Request as ServingRequest,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.monitoring import (
    render as monitoring_render,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import (
    render,
    render_deployment,
)

_OPERATOR_KEYS = ("package", "namespace", "catalog", "catalog_namespace", "channel",
                  "starting_csv", "approval", "install_mode", "target_namespace")


def combine(base: dict, over: dict) -> dict:
    """Ansible's ``combine(recursive=True)``: dicts merge, anything else is replaced."""
    out = dict(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = combine(out[key], value)
        else:
            out[key] = value
    return out


def nodes(values: dict) -> list[dict]:
    """Stage 2: our labels (and taints) on each GPU node (the ocp_gpu_nodes module)."""
    per_vm = values.get("gpus_per_vm")
    per_vm = int(per_vm) if isinstance(per_vm, str) and per_vm.isdigit() else per_vm
    workers = values.get("workers") or [{"vm": vm, "gpus": per_vm}
                                        for vm in values.get("vms") or []]
    parsed = gpu_nodes.parse_workers(workers)
    check_taints(values.get("taints") or [])
    node_map = values.get("node_map") or {}
    return [gpu_nodes.node_manifest(node_map.get(w.vm, w.vm),
                                    gpu_nodes.desired_labels(w, values.get("labels") or {}),
                                    values.get("taints") or None)
            for w in sorted(parsed, key=lambda w: node_map.get(w.vm, w.vm))]


def _instance(entry: dict) -> list[dict]:
    """The operator's custom resource: the CSV's example of ``instance.kind`` combined with
    ``instance.overrides`` (as the gpu_operators role does)."""
    want = entry.get("instance") or {}
    if not want.get("kind"):
        return []
    found = [e for e in entry.get("examples") or [] if e.get("kind") == want["kind"]]
    if not found:
        raise InvalidInputError(
            f"operator {entry['package']}: no {want['kind']} among the CSV's alm-examples "
            "(the examples of the pinned CSV: read from a cluster where it is installed, or "
            "given; the export installs nothing)")
    obj = combine(found[0], want.get("overrides") or {})
    if want.get("namespace") and not obj.get("metadata", {}).get("namespace"):
        obj = combine(obj, {"metadata": {"namespace": want["namespace"]}})
    return [obj]


def _subscribe(entry: dict) -> list[dict]:
    if not entry.get("channel"):
        raise InvalidInputError(f"operator {entry.get('package')}: channel is required "
                                "for the export (no catalog is read)")
    spec = olm.OperatorSpec(**{k: entry[k] for k in _OPERATOR_KEYS if entry.get(k) is not None})
    return olm.operator_manifests(spec, spec.channel, None)


def operators(values: dict) -> list[dict]:
    """Stage 3: Namespace, OperatorGroup, Subscription of each operator (the olm_operator
    module) and its instance (NodeFeatureDiscovery, ClusterPolicy) from the CSV's
    examples; with ``serving_platform`` (an operator entry with its
    ``applications_namespace``: OpenShift AI or Open Data Hub) that operator, its
    DSCInitialization and KServe managed in the DataScienceCluster ``default-dsc``
    (``serving_platform.exported``). The channel must be given: the export reads no
    catalog."""
    out = []
    for entry in values.get("operators") or []:
        out += _subscribe(entry) + _instance(entry)
    platform = values.get("serving_platform")
    if platform:
        out += _subscribe(platform) + serving_platform.exported(
            platform.get("applications_namespace") or "")
    return out


def storage(values: dict) -> list[dict]:
    """Stage 4: the namespace and the ReadWriteMany model volume (the model_stage module).
    The stager Job is not exported: each run has its own, removed when it ends, and a
    local source is uploaded from the controller."""
    pvc = values.get("pvc") or {}
    if not pvc.get("name"):
        raise InvalidInputError("storage: pvc.name is required")
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": values["namespace"]}}
    return [ns, *staging.volume_manifests(values["namespace"], pvc)]


def serving_request(values: dict) -> ServingRequest:
    """The serving module's request from the role's values (no key: never exported)."""
    known = set(ServingRequest.__dataclass_fields__) - {"llm_api_key", "check_mode", "diff"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidInputError(f"serving: unknown options {', '.join(unknown)}")
    req = ServingRequest(**{k: v for k, v in values.items() if v is not None})
    missing = [k for k in ("plan", "image", "served_model_name", "model_dir")
               if not getattr(req, k)]
    if missing:
        raise InvalidInputError(f"serving needs: {', '.join(missing)}")
    check_model_dir(req.model_dir)
    return req


def _releases(values: dict) -> list[dict]:
    """One model's options, or ``{"releases": [...]}`` (the ray_vllm role serves a list)."""
    releases = values.get("releases", [values])
    names = [r.get("name") or "llm" for r in releases]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"serving: two releases share a name ({', '.join(names)})")
    return releases


def serving(values: dict) -> list[dict]:
    """Stage 5: per release, the objects the serving module applies for its backend
    (RayClusters or a Deployment, Service, Route, NetworkPolicies), then its hand-over
    ConfigMap (endpoint ``https://<route_host>`` when the host is given: the router
    assigns it otherwise, and the ConfigMap's endpoint stays empty until the module runs)."""
    out = []
    for release in _releases(values):
        req = serving_request(release)
        cfg = req.config()
        plan = render.check_plan(req.plan)
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": req.namespace}}
        endpoint = f"https://{req.route_host}" if req.route_host else None
        out += [ns, *render_deployment.render_manifests(req.backend, plan, cfg),
                render.handover(cfg, endpoint, plan, req.backend)]
    return out


def serving_secrets(values: dict) -> list[dict]:
    """The Secrets the serving objects read: each release's API-key Secret and its keys."""
    out = []
    for release in _releases(values):
        req = serving_request(release)
        if req.secret_name:
            out.append({"namespace": req.namespace, "name": req.secret_name,
                        "keys": [render.API_KEY_FILE, render.METRICS_KEY_FILE]})
    return out


def _handovers(serving_values: dict) -> list[dict]:
    """The serving models' hand-over ConfigMaps, as the serving module writes them."""
    return [o for o in serving(serving_values) if o["kind"] == "ConfigMap"
            and (o["metadata"].get("labels") or {}).get(
                "app.kubernetes.io/component") == "serving-handover"]


def gateway_request(values: dict) -> GatewayRequest:
    known = set(GatewayRequest.__dataclass_fields__) - {
        "master_key", "state", "wait", "wait_timeout", "check_mode", "diff"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidInputError(f"gateway: unknown options {', '.join(unknown)}")
    req = GatewayRequest(**{k: v for k, v in values.items() if v is not None})
    if not req.image:
        raise InvalidInputError("gateway needs: image")
    gw_render.validate(req.config())
    return req


def gateway(values: dict) -> list[dict]:
    """The LiteLLM gateway (the llm_gateway module's objects and hand-over) in front of
    the models of ``serving`` (the serving stage's values), found as the module finds
    them: the hand-overs in the gateway's namespace. The pods' config digest covers the
    config and the environment; the module's also covers the keys (it reads the
    Secrets), so that annotation differs."""
    values = dict(values)
    req = gateway_request({k: v for k, v in values.items() if k != "serving"})
    found = {h["data"]["service"]: h for h in _handovers(values.get("serving") or {"releases": []})
             if h["metadata"]["namespace"] == req.namespace}
    missing = [m for m in req.models or [] if m not in found]
    if missing or not found:
        raise InvalidInputError(f"gateway: no served model {', '.join(missing)} in namespace "
                                f"{req.namespace} (found: {', '.join(sorted(found)) or 'none'})")
    backends = [gw_config.backend(found[m]) for m in (req.models or sorted(found))]
    text = gw_config.config_text(gw_config.litellm_config(backends, req.settings()))
    env = gw_config.pod_env(backends, req.secret_name)
    cfg = req.config()
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": req.namespace}}
    endpoint = f"https://{req.route_host}" if req.route_host else None
    models = sorted({b["served_model_name"] for b in backends})
    return [ns, *gw_render.manifests(cfg, text, env, gw_config.config_digest(text, env)),
            gw_render.handover(cfg, endpoint, models)]


def gateway_secrets(values: dict) -> list[dict]:
    req = gateway_request({k: v for k, v in values.items() if k != "serving"})
    return [{"namespace": req.namespace, "name": req.secret_name,
             "keys": [gw_config.MASTER_KEY_FIELD]}]


def _servers(serving_values: dict) -> list[dict]:
    """One monitoring server per model: its hand-over and its Service's pod selector, as
    the monitoring role reads them from the cluster."""
    services = {(o["metadata"]["namespace"], o["metadata"]["name"]): o
                for o in serving(serving_values) if o["kind"] == "Service"}
    out = []
    for handover in _handovers(serving_values):
        data = handover["data"]
        service = services.get((data["namespace"], data["service"])) or {}
        out.append(monitoring_render.server_from_handover(
            data, (service.get("spec") or {}).get("selector")))
    return out


def monitoring(values: dict) -> list[dict]:
    """The monitoring stage (``monitoring.render.manifests``); without ``servers``, one
    server per model of ``serving`` (the serving stage's values)."""
    values = dict(values)
    serving_values = values.pop("serving", None)
    if serving_values is not None and not values.get("servers"):
        values["servers"] = _servers(serving_values)
    return monitoring_render.manifests(values)


# stage name -> renderer, in the order the site applies them. A new stage: one line.
RENDERERS = {
    "nodes": nodes,
    "operators": operators,
    "storage": storage,
    "serving": serving,
    "gateway": gateway,
    "monitoring": monitoring,
}

# stage name -> the Secrets its objects read (never their values). Optional per stage.
SECRET_REFS = {
    "serving": serving_secrets,
    "gateway": gateway_secrets,
}


def render_stage(stage: str, values: dict) -> list[dict]:
    if stage not in RENDERERS:
        raise InvalidInputError(f"unknown stage {stage!r}; known: {', '.join(RENDERERS)}")
    return RENDERERS[stage](values or {})
