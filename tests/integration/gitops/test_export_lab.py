"""playbooks' gitops_export role against the lab: the roles apply the site to one lab,
the export of the same inventory is built with ``kubectl kustomize`` and applied with
server-side apply to a fresh lab, and both clusters are read back and compared.

The comparison is two-way: every field the tree sets has the same value on both
clusters, and every object the roles wrote (field manager ``llmops.gpu_stack``) is in
the tree, except the API-key Secret, whose values are nowhere in the tree."""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import (
    olm_runner,
    serving_platform,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import K8sClient
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.olm import OperatorSpec
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan
from gpu_lab.gpu_inventory import StaticGpuInventory, reference_site
from kubernetes import client
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from ..lab.waiting import wait_for
from ..openshift.k8s_helpers import OLM, REPO, api, custom, run_play

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(shutil.which("kubectl") is None,
                                 reason="kubectl (Debian's kubernetes-client) is not on PATH")]

MANAGER = "llmops.gpu_stack"
# What the roles write and the tree does not hold: the key (a reference in the tree).
NOT_EXPORTED = {("Secret", "llm", "llm-api-key")}
KINDS = [("v1", "Node"), ("v1", "Namespace"), ("v1", "PersistentVolumeClaim"),
         ("v1", "PersistentVolume"), ("v1", "ServiceAccount"), ("v1", "Service"),
         ("v1", "ConfigMap"), ("v1", "Secret"), ("operators.coreos.com/v1", "OperatorGroup"),
         (OLM, "Subscription"), ("nfd.openshift.io/v1", "NodeFeatureDiscovery"),
         ("nvidia.com/v1", "ClusterPolicy"), ("ray.io/v1", "RayCluster"),
         ("route.openshift.io/v1", "Route"), ("networking.k8s.io/v1", "NetworkPolicy"),
         (serving_platform.DSCI_API, "DSCInitialization"),
         (serving_platform.DSC_API, "DataScienceCluster")]
PLATFORM = "gpu_operators_odh"  # inventories/lab: gpu_operators_serving_platform odh
# The serving module's arguments as the ray_vllm role passes them, without the wait
# (no vLLM here: specs are compared, not pods).
SERVING = {key: f"{{{{ ray_vllm_{key} }}}}" for key in (
    "namespace", "name", "image", "served_model_name", "model_pvc", "model_dir",
    "node_selector", "tolerations", "head_resources", "worker_resources", "shm_size",
    "startup_checks", "route_timeout", "ray_version", "extra_vllm_args", "env",
    "head_ray_params", "worker_ray_params", "kuberay_operator_namespace",
    "kuberay_operator_pod_labels")}


def _site_play(key: str) -> list[dict]:
    return [
        {"name": "The serving role's variables", "ansible.builtin.import_role": {
            "name": "llmops.gpu_stack.ray_vllm"}, "when": False, "tags": ["never"]},
        {"name": "Stage 2", "ansible.builtin.include_role": {
            "name": "llmops.gpu_stack.ocp_gpu_nodes"}},
        {"name": "Stage 4, the volume", "llmops.gpu_stack.model_stage": {
            "namespace": "{{ model_storage_namespace }}", "pvc": "{{ model_storage_pvc }}",
            "model_dir": "{{ model_storage_model_dir }}", "state": "volume",
            "source": {"type": "hub", "repo_id": "lab/tiny-llama"}}},
        {"name": "Stage 5 without the wait", "llmops.gpu_stack.ray_vllm_cluster": {
            **SERVING, "plan": "{{ ray_vllm_plan }}", "llm_api_key": key, "wait": False}},
        {"name": "Export", "ansible.builtin.include_role": {
            "name": "llmops.gpu_stack.gitops_export"}},
    ]


def _operators_stage(lab) -> None:
    """Stage 3 as the gpu_operators role runs it (its defaults; the lab inventory keeps
    them, and adds Open Data Hub as its serving platform): olm_operator for each
    operator, then the NFD instance and the ClusterPolicy from the CSV's example with the
    role's (empty) overrides, the platform's DSCInitialization and DataScienceCluster. In
    process: the role's waits through ansible-playbook would cost this test half a minute
    more."""
    defaults = yaml.safe_load((REPO / "roles/gpu_operators/defaults/main.yml").read_text())
    k8s = K8sClient.from_params({"kubeconfig": str(lab.kubeconfig), "context": "lab-admin"})
    for key, kind in (("gpu_operators_nfd", "NodeFeatureDiscovery"),
                      ("gpu_operators_gpu_operator", "ClusterPolicy"),
                      ("gpu_operators_kuberay", None), (PLATFORM, None)):
        spec = OperatorSpec(**{k: v for k, v in defaults[key].items()
                               if k != "applications_namespace"},
                            approval=defaults["gpu_operators_approval"])
        installed = olm_runner.run(k8s, olm_runner.Request(operator=spec, wait_timeout=60))
        if kind:
            example = next(e for e in installed["alm_examples"] if e["kind"] == kind)
            if kind == "NodeFeatureDiscovery":
                example["metadata"].setdefault("namespace", spec.namespace)
            k8s.apply(example, check_mode=False)
    # the lab inventory's kserve platform: the DSCInitialization the role creates where
    # the cluster has none (as in the lab), KServe managed in the DataScienceCluster
    for obj in (serving_platform.dsci(defaults[PLATFORM]["applications_namespace"]),
                serving_platform.dsc()):
        k8s.apply(obj, check_mode=False)


def _dynamic(lab):
    from kubernetes.dynamic import DynamicClient

    return DynamicClient(api(lab))


def _get(dyn, obj: dict) -> dict | None:
    meta = obj["metadata"]
    try:
        res = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        return res.get(name=meta["name"], namespace=meta.get("namespace")).to_dict()
    except NotFoundError:
        return None


def _project(live, want):
    """``live`` reduced to the fields ``want`` sets (what the collection owns)."""
    if isinstance(want, dict) and isinstance(live, dict):
        return {k: _project(live.get(k), v) for k, v in want.items()}
    if isinstance(want, list) and isinstance(live, list) and len(want) == len(live):
        return [_project(a, b) for a, b in zip(live, want, strict=True)]
    return live


def _ours(lab) -> set[tuple]:
    """Every object of KINDS that our field manager applied."""
    dyn, found = _dynamic(lab), set()
    for api_version, kind in KINDS:
        try:
            items = dyn.resources.get(api_version=api_version, kind=kind).get().to_dict()["items"]
        except ResourceNotFoundError:  # a kind the lab does not serve holds nothing of ours
            continue
        for obj in items:
            meta = obj["metadata"]
            if any(m.get("manager") == MANAGER for m in meta.get("managedFields") or []):
                found.add((kind, meta.get("namespace"), meta["name"]))
    return found


def _apply(lab, docs: list[dict], path: Path) -> None:
    path.write_text(yaml.safe_dump_all(docs))
    subprocess.run(["kubectl", "--kubeconfig", str(lab.kubeconfig), "--context", "lab-admin",
                    "apply", "--server-side", "--field-manager", "argocd-controller",
                    "--validate=false", "-f", str(path)], check=True, capture_output=True,
                   text=True, timeout=60)


def _served(dyn, doc: dict) -> bool:
    try:
        dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    except ResourceNotFoundError:
        return False
    return True


def _approve_pinned(lab, subs: list[dict]) -> None:
    """What an admin (or olm_operator) does once with Manual approval."""
    objs = client.CustomObjectsApi(api(lab))
    for sub in subs:
        ns, csv = sub["metadata"]["namespace"], sub["spec"]["startingCSV"]
        plan = wait_for(lambda ns=ns, csv=csv: next(
            (p for p in custom(lab, OLM, "installplans", ns)
             if p["spec"]["clusterServiceVersionNames"] == [csv]), None),
            f"the InstallPlan of {csv}", timeout=30)
        objs.patch_namespaced_custom_object("operators.coreos.com", "v1alpha1", ns,
                                            "installplans", plan["metadata"]["name"],
                                            {"spec": {"approved": True}})


def test_the_exported_tree_on_a_fresh_lab_equals_what_the_roles_apply(
        k8s_lab_factory, tmp_path):
    roles_lab = k8s_lab_factory(gpu_inventory=StaticGpuInventory(reference_site()))
    # the same machines (GPU workers), a new API server that nothing was applied to
    fresh = k8s_lab_factory(gpu_inventory=StaticGpuInventory(reference_site()))
    key = secrets.token_urlsafe(24)
    dest = tmp_path / "tree"
    plan = build_plan({"preset": "llama-3-8b"},
                      {"nodes": 2, "gpus_per_node": 2, "gpu_memory_gib": 80},
                      layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 2},
                      topology="head_without_gpus")
    _operators_stage(roles_lab)
    rc, _tasks, out = run_play(
        roles_lab, tmp_path, _site_play(key), inventory=str(REPO / "inventories" / "lab"),
        env_extra={"GPU_LAB_HOME": str(roles_lab.settings.home)},
        # one model (the lab inventory lists two): the single-model form of each role
        vars_file={"serving_plan": plan, "gitops_export_dest": str(dest),
                   "gpu_stack_models": [], "model_storage_model_dir": "tiny-llama",
                   "ray_vllm_served_model_name": "tiny-llama", "ray_vllm_model_dir": "tiny-llama",
                   "gitops_export_repo_url": "https://git.example.com/platform/gpu-site.git",
                   "gitops_export_repo_path": "clusters",
                   # the monitoring stage's CRDs are not in this lab (unit tests compare it)
                   "gitops_export_stages": ["nodes", "operators", "storage", "serving"]})
    assert rc == 0, out[-4000:]

    # no secret value anywhere in the tree (the roles' Secret holds both)
    stored = client.CoreV1Api(api(roles_lab)).read_namespaced_secret("llm-api-key", "llm").data
    values = {base64.b64decode(v).decode() for v in stored.values()}
    assert key in values and len(values) == 2
    texts = [p.read_text() for p in dest.rglob("*") if p.is_file()]
    assert not [v for v in values if any(v in t for t in texts)]
    app = yaml.safe_load((dest / "argocd/lab.yaml").read_text())
    assert app["spec"]["source"]["path"] == "clusters/overlays/lab"

    built = subprocess.run(["kubectl", "kustomize", str(dest / app["spec"]["source"]["path"]
                                                        .removeprefix("clusters/"))],
                           capture_output=True, text=True, check=True).stdout
    docs = list(yaml.safe_load_all(built))
    ids = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs}
    ours = _ours(roles_lab) - NOT_EXPORTED
    # a manager owns no field of an object that names itself only (a Namespace, the
    # ServiceAccount): those are found by the comparison below
    bare = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs
            if set(d) == {"apiVersion", "kind", "metadata"}
            and set(d["metadata"]) <= {"name", "namespace"}}
    assert ours == ids - bare, (sorted(ours - ids, key=str), sorted(ids - ours, key=str))

    # the fresh lab, as Argo CD syncs it: what is served now, the pinned InstallPlans
    # approved once, the operators' custom resources when their CRDs are there
    dyn = _dynamic(fresh)
    now = [d for d in docs if _served(dyn, d)]
    later = [d for d in docs if d not in now]
    assert {d["kind"] for d in later} == {"NodeFeatureDiscovery", "ClusterPolicy", "RayCluster",
                                          "DSCInitialization", "DataScienceCluster"}
    _apply(fresh, now, tmp_path / "wave-1.yaml")
    _approve_pinned(fresh, [d for d in docs if d["kind"] == "Subscription"])
    wait_for(lambda: all(_served(_dynamic(fresh), d) for d in later),
             "the operators' CRDs on the fresh lab", timeout=60)
    _apply(fresh, later, tmp_path / "wave-2.yaml")

    roles_dyn, fresh_dyn = _dynamic(roles_lab), _dynamic(fresh)
    for doc in docs:
        ref = (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        by_roles, by_tree = _get(roles_dyn, doc), _get(fresh_dyn, doc)
        assert _project(by_tree, doc) == doc, ref
        if doc["kind"] == "ConfigMap":  # the hand-over: the roles record the admitted host
            assert by_roles["data"]["endpoint"].startswith("https://")
            by_roles["data"]["endpoint"] = doc["data"]["endpoint"]
        assert _project(by_roles, doc) == doc, ref
