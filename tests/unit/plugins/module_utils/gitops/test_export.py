"""The GitOps export: layout, idempotent writes, check mode, secrets, the registry.

What the tree holds is compared with what the modules' runners apply to the in-memory
cluster (``FakeClient``'s record of applied manifests), not with the export's result."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_collections.llmops.gpu_stack.plugins.filter import monitoring as role_filters
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gitops import export, stages
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gitops.patches import (
    apply_patch,
    json_patch,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import (
    gateway_runner,
    gpu_nodes_runner,
    serving_runner,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan

from ..k8s.fake_client import FIELD_MANAGER, FakeClient
from .conftest import HOST, NS, operators, site_stages

APP = {"repo_url": "https://git.example.com/platform/gpu-site.git", "path": "clusters/gpu"}


def _export(tmp_path, stages_, **kwargs) -> dict:
    args = {"dest": str(tmp_path / "tree"), "inventory": "site-a", "stages": stages_,
            "base": {"operators": operators()}, "application": APP, **kwargs}
    return export.run(export.Request(**args))


def _docs(root: Path, pattern: str) -> dict[tuple, dict]:
    out = {}
    for path in sorted(root.glob(pattern)):
        for doc in yaml.safe_load_all(path.read_text()):
            meta = doc["metadata"]
            out[(doc["kind"], meta.get("namespace"), meta["name"])] = doc
    return out


def _applied(fake: FakeClient) -> dict[tuple, dict]:
    """What a runner applied, per object (our field manager's manifest)."""
    return {(k[0], k[1], k[2]): v["applied"][FIELD_MANAGER]
            for k, v in fake.objects.items() if FIELD_MANAGER in v["applied"]}


def test_layout_base_overlay_and_application(tmp_path, site_values):
    result = _export(tmp_path, site_values)
    root = tmp_path / "tree"
    assert result["changed"] and result["overlay"] == "overlays/site-a"
    base = yaml.safe_load((root / "base/kustomization.yaml").read_text())
    assert "operators/subscription-nfd.yaml" in base["resources"]
    assert "operators/clusterpolicy-gpu-cluster-policy.yaml" in base["resources"]
    overlay = yaml.safe_load((root / "overlays/site-a/kustomization.yaml").read_text())
    assert overlay["resources"][0] == "../../base"
    assert "patches" not in overlay  # the site keeps the collection's pins
    assert {"nodes/node-gpu-0.yaml", "nodes/node-worker-1.yaml", "serving/raycluster-llm-0.yaml",
            "serving/route-llm.yaml", "serving/configmap-llm-endpoint.yaml",
            "storage/persistentvolumeclaim-models.yaml"} <= set(overlay["resources"])
    assert "serving/namespace-llm.yaml" not in overlay["resources"]  # storage has it once
    app = yaml.safe_load((root / "argocd/site-a.yaml").read_text())
    assert app["spec"]["source"] == {"repoURL": APP["repo_url"], "targetRevision": "HEAD",
                                     "path": "clusters/gpu/overlays/site-a"}
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]


def test_the_tree_holds_what_the_runners_apply(tmp_path, site_values):
    _export(tmp_path, site_values)
    tree = _docs(tmp_path / "tree", "overlays/site-a/*/*.yaml")
    # the serving stage, run against the in-memory cluster without waiting
    nodes = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": {
        "gpu-stack.llmops.io/gpu-node": "true"}}, "status": {"allocatable": {
            "nvidia.com/gpu": "2"}}} for n in ("gpu-0", "worker-1")]
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": "models", "namespace": NS},
           "spec": {"accessModes": ["ReadWriteMany"]}}
    fake = FakeClient([*nodes, pvc])
    serving_runner.run(fake, serving_runner.Request(**site_values["serving"], wait=False))
    gpu_nodes_runner.run(fake, gpu_nodes_runner.Request(
        workers=[{"vm": "gpu-0", "gpus": 2}, {"vm": "gpu-1", "gpus": 2}],
        node_map={"gpu-1": "worker-1"}))
    applied = _applied(fake)
    applied.pop(("Secret", NS, "llm-api-key"))  # the key: never in the tree
    head = applied[("RayCluster", NS, "llm-0")]["spec"]["headGroupSpec"]["template"]
    head["metadata"]["annotations"].pop("gpu-stack.llmops.io/api-key-sha256")
    # the Route's host: the runner records the admitted host, the tree the given one
    assert applied[("ConfigMap", NS, "llm-endpoint")]["data"]["endpoint"] == ""
    applied[("ConfigMap", NS, "llm-endpoint")]["data"]["endpoint"] = f"https://{HOST}"
    for key, manifest in applied.items():
        assert tree[key] == manifest, key
    base = _docs(tmp_path / "tree", "base/*/*.yaml")
    assert base[("Subscription", "openshift-nfd", "nfd")]["spec"]["startingCSV"] == \
        "nfd.4.18.0-202505061007"
    assert base[("ClusterPolicy", None, "gpu-cluster-policy")]["spec"]["dcgmExporter"] == {
        "enabled": True}


def test_a_rerun_writes_nothing_and_check_mode_writes_nothing(tmp_path, site_values):
    first = _export(tmp_path, site_values)
    root = tmp_path / "tree"
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    again = _export(tmp_path, site_values)
    assert again["changed"] is False and again["written"] == [] and again["removed"] == []
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    assert len(stamps) == len(first["files"])

    two_replicas = site_stages()
    plan = two_replicas["serving"]["plan"]
    plan["ray_cluster"]["clusters"] = 2  # two replicas: one more RayCluster
    check = _export(tmp_path, two_replicas, check_mode=True)
    assert check["changed"] and "overlays/site-a/serving/raycluster-llm-1.yaml" in check["written"]
    assert not (root / "overlays/site-a/serving/raycluster-llm-1.yaml").exists()
    new_file = "overlays/site-a/serving/raycluster-llm-1.yaml"
    assert "name: llm-1\n" in check["diff"]["after"][new_file]
    _export(tmp_path, two_replicas)
    assert (root / "overlays/site-a/serving/raycluster-llm-1.yaml").exists()
    # back to one replica: the stale file goes, another inventory's overlay stays
    other = root / "overlays/site-b/kustomization.yaml"
    other.parent.mkdir(parents=True)
    other.write_text("resources: []\n")
    back = _export(tmp_path, site_values)
    assert back["removed"] == ["overlays/site-a/serving/networkpolicy-llm-1-peers.yaml",
                               "overlays/site-a/serving/raycluster-llm-1.yaml"]
    assert not (root / "overlays/site-a/serving/raycluster-llm-1.yaml").exists()
    assert other.read_text() == "resources: []\n"


def test_an_inventory_that_changes_a_pin_gets_a_patch(tmp_path):
    site = site_stages()
    site["operators"] = operators(starting_csv="nfd.4.18.0-202506010000",
                                  instance={"kind": "NodeFeatureDiscovery",
                                            "namespace": "openshift-nfd",
                                            "overrides": {"spec": {"operand": {"image": "b"}}}})
    site["operators"]["operators"].pop()  # no KubeRay through OLM here
    _export(tmp_path, site)
    root = tmp_path / "tree/overlays/site-a"
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    paths = [p["path"] for p in kustomization["patches"]]
    assert "patches/operators-subscription-nfd.yaml" in paths
    assert "patches/delete-operators-subscription-kuberay-operator.yaml" in paths
    ops = yaml.safe_load((root / "patches/operators-subscription-nfd.yaml").read_text())
    assert ops == [{"op": "replace", "path": "/spec/startingCSV",
                    "value": "nfd.4.18.0-202506010000"}]


def test_json_patch_round_trip():
    before = {"metadata": {"labels": {"a/b": "1", "c~d": "2"}}, "spec": {"x": [1, 2], "y": 1}}
    after = {"metadata": {"labels": {"a/b": "3"}}, "spec": {"x": [2], "z": {"k": 1}}}
    ops = json_patch(before, after)
    assert {"op": "replace", "path": "/metadata/labels/a~1b", "value": "3"} in ops
    assert {"op": "remove", "path": "/metadata/labels/c~0d"} in ops
    assert apply_patch(before, ops) == after


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="kubectl (Debian's kubernetes-client) is not on PATH")
def test_kubectl_kustomize_builds_exactly_the_sites_objects(tmp_path):
    site = site_stages()
    site["operators"] = operators(starting_csv="nfd.4.18.0-202506010000")
    site["operators"]["operators"].pop()  # a base object the site deletes
    _export(tmp_path, site)
    built = subprocess.run(["kubectl", "kustomize", str(tmp_path / "tree/overlays/site-a")],
                           capture_output=True, text=True, check=True).stdout
    got = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
           for d in yaml.safe_load_all(built)}
    want = {}
    for stage, values in site.items():
        for obj in stages.render_stage(stage, values):
            want[(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])] = obj
    assert got == want


def test_no_secret_value_in_the_tree(tmp_path):
    key = "sk-gpu-stack-unit-9f3c1e"  # a test value the tree must not hold
    site = site_stages(env={"LOG_LEVEL": "info"})
    with pytest.raises(InvalidInputError, match="unknown options llm_api_key"):
        _export(tmp_path, {**site, "serving": {**site["serving"], "llm_api_key": key}})
    result = _export(tmp_path, site, secrets={"mode": "external_secret", "store": "vault",
                                              "remote_key_prefix": "gpu"})
    assert result["secrets"] == [f"{NS}/llm-api-key"]
    texts = [p.read_text() for p in (tmp_path / "tree").rglob("*") if p.is_file()]
    assert not any(key in t for t in texts)
    assert not any(yaml_doc.get("kind") == "Secret" for p in (tmp_path / "tree").rglob("*.yaml")
                   for yaml_doc in yaml.safe_load_all(p.read_text())
                   if isinstance(yaml_doc, dict))
    stub = yaml.safe_load((tmp_path / "tree/overlays/site-a/secrets/"
                           "externalsecret-llm-api-key.yaml").read_text())
    assert stub["spec"]["target"]["name"] == "llm-api-key"
    assert [d["secretKey"] for d in stub["spec"]["data"]] == ["api-key", "metrics-key"]
    assert stub["spec"]["data"][0]["remoteRef"] == {"key": "gpu/llm/llm-api-key",
                                                    "property": "api-key"}
    readme = (tmp_path / "tree/overlays/site-a/README.md").read_text()
    assert "`llm/llm-api-key`" in readme


def test_a_new_stage_plugs_in_with_one_line(tmp_path, site_values, monkeypatch):
    def gateway(values):
        return [{"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "gateway", "namespace": values["namespace"]},
                 "data": {"models": "tiny-llama"}}]

    monkeypatch.setitem(stages_registry(), "proxy", gateway)
    _export(tmp_path, {**site_values, "proxy": {"namespace": NS}})
    overlay = yaml.safe_load((tmp_path / "tree/overlays/site-a/kustomization.yaml").read_text())
    assert "proxy/configmap-gateway.yaml" in overlay["resources"]


def stages_registry() -> dict:
    return stages.RENDERERS


@pytest.mark.parametrize(("change", "message"), [
    ({"inventory": "../x"}, "must be one path segment"),
    ({"application": {}}, "repo_url"),
    ({"secrets": {"mode": "plain"}}, "secrets.mode must be one of"),
    ({"secrets": {"mode": "external_secret"}}, "needs secrets.store"),
])
def test_bad_input_writes_nothing(tmp_path, site_values, change, message):
    with pytest.raises(InvalidInputError, match=message):
        _export(tmp_path, site_values, **change)
    assert not (tmp_path / "tree").exists()


def test_bad_stage_values_write_nothing(tmp_path):
    site = site_stages()
    broken = copy.deepcopy(site)
    broken["operators"]["operators"][1]["examples"] = []
    with pytest.raises(InvalidInputError, match="no ClusterPolicy among the CSV's alm-examples"):
        _export(tmp_path, broken)
    broken = copy.deepcopy(site)
    broken["serving"]["image"] = "ray-vllm"
    with pytest.raises(InvalidInputError, match="needs a tag or a digest"):
        _export(tmp_path, broken)
    assert not (tmp_path / "tree").exists()


def test_every_release_and_backend_is_what_the_serving_runner_applies(tmp_path):
    """The ray_vllm role serves a list of models, each with its backend."""
    small = build_plan({"preset": "llama-3-8b"},
                       {"nodes": 2, "gpus_per_node": 2, "gpu_memory_gib": 80},
                       layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 1})
    site = site_stages()
    llama = {**site["serving"], "route_host": None}
    small_model = {**llama, "name": "small", "served_model_name": "small",
                   "model_dir": "small", "plan": small, "backend": "deployment"}
    site["serving"] = {"releases": [llama, small_model]}
    result = _export(tmp_path, site)
    assert result["secrets"] == [f"{NS}/llm-api-key", f"{NS}/small-api-key"]
    tree = _docs(tmp_path / "tree", "overlays/site-a/*/*.yaml")
    nodes = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"n-{i}", "labels": {
        "gpu-stack.llmops.io/gpu-node": "true"}}, "status": {"allocatable": {
            "nvidia.com/gpu": "2"}}} for i in range(4)]
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": "models", "namespace": NS},
           "spec": {"accessModes": ["ReadWriteMany"]}}
    fake = FakeClient([*nodes, pvc])
    for release in (llama, small_model):
        serving_runner.run(fake, serving_runner.Request(**release, wait=False))
    applied = _applied(fake)
    assert ("Deployment", NS, "small") in applied and ("RayCluster", NS, "llm-0") in applied
    for key, manifest in applied.items():
        if key[0] == "Secret":
            continue  # never in the tree
        manifest = copy.deepcopy(manifest)
        template = (manifest.get("spec") or {}).get("template") or (
            manifest.get("spec", {}).get("headGroupSpec") or {}).get("template")
        if template:  # the key's digest: the module's roll trigger, no key in the tree
            notes = template["metadata"].pop("annotations", {})
            notes.pop("gpu-stack.llmops.io/api-key-sha256", None)
            if notes:
                template["metadata"]["annotations"] = notes
        assert tree[key] == manifest, key


def test_the_monitoring_stage_is_exported_by_its_own_renderer(tmp_path, site_values):
    """Registered with one line in stages.RENDERERS: the monitoring role's objects."""
    monitoring = {"namespace": NS, "servers": [{"name": "llm", "namespace": NS,
                                                "api_key_secret": "llm-api-key"}]}
    _export(tmp_path, {**site_values, "monitoring": monitoring})
    overlay = yaml.safe_load((tmp_path / "tree/overlays/site-a/kustomization.yaml").read_text())
    kinds = {Path(r).name.split("-")[0] for r in overlay["resources"]
             if r.startswith("monitoring/")}
    assert {"servicemonitor", "prometheusrule", "configmap"} <= kinds
    texts = [p.read_text() for p in (tmp_path / "tree").rglob("*.yaml")]
    assert not any("kind: Secret\n" in t for t in texts)  # the metrics key by reference


def test_a_stage_that_renders_a_secret_is_refused(tmp_path, site_values, monkeypatch):
    def leaky(values):
        meta = {"name": "master-key", "namespace": NS}
        return [{"apiVersion": "v1", "kind": "Secret", "metadata": meta,
                 "stringData": {"key": values["key"]}}]

    monkeypatch.setitem(stages_registry(), "leaky", leaky)
    with pytest.raises(InvalidInputError, match="stage leaky renders Secret master-key"):
        _export(tmp_path, {**site_values, "leaky": {"key": "sk-not-in-git"}})
    assert not (tmp_path / "tree").exists()


def test_monitoring_derived_from_the_serving_models_is_what_the_role_renders(tmp_path,
                                                                             site_values):
    """The role reads the hand-overs and Services from the cluster (its filters); the
    export derives the same servers from the serving models it renders."""
    serving = site_values["serving"]
    values = {"namespace": NS, "thresholds": {}, "interval": "30s"}
    _export(tmp_path, {**site_values, "monitoring": {**values, "serving": serving}})
    tree = _docs(tmp_path / "tree", "overlays/site-a/monitoring/*.yaml")

    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": "models", "namespace": NS},
           "spec": {"accessModes": ["ReadWriteMany"]}}
    nodes = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"n-{i}", "labels": {
        "gpu-stack.llmops.io/gpu-node": "true"}}, "status": {"allocatable": {
            "nvidia.com/gpu": "2"}}} for i in range(2)]
    fake = FakeClient([*nodes, pvc])
    serving_runner.run(fake, serving_runner.Request(**serving, wait=False))
    handovers = fake.list("v1", "ConfigMap", NS,
                          label_selector="app.kubernetes.io/component=serving-handover")
    services = fake.list("v1", "Service", NS)
    servers = role_filters.monitoring_servers(handovers, services)
    by_role = role_filters.monitoring_manifests({**values, "servers": servers})
    assert servers and by_role
    assert {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
            for o in by_role} == tree


def test_the_gateway_is_what_the_gateway_runner_applies(tmp_path, site_values):
    """The gateway in front of the serving models, as the llm_gateway module finds them
    (their hand-overs) and applies it; only its pods' config digest differs (the
    module's also covers the keys it reads from the Secrets)."""
    serving = site_values["serving"]
    gateway = {"namespace": NS, "name": "llm-gateway",
               "image": "registry.example.com/llmops/gateway:0.1.0"}
    result = _export(tmp_path, {**site_values, "gateway": {**gateway, "serving": serving}})
    assert f"{NS}/llm-gateway-master-key" in result["secrets"]
    tree = _docs(tmp_path / "tree", "overlays/site-a/gateway/*.yaml")

    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": "models", "namespace": NS},
           "spec": {"accessModes": ["ReadWriteMany"]}}
    nodes = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"n-{i}", "labels": {
        "gpu-stack.llmops.io/gpu-node": "true"}}, "status": {"allocatable": {
            "nvidia.com/gpu": "2"}}} for i in range(2)]
    fake = FakeClient([*nodes, pvc])
    serving_runner.run(fake, serving_runner.Request(**serving, wait=False))
    gateway_runner.run(fake, gateway_runner.Request(**gateway, wait=False))
    applied = {k: v for k, v in _applied(fake).items()
               if k[2].startswith("llm-gateway") and k[0] != "Secret"}
    assert ("Deployment", NS, "llm-gateway") in applied
    digest = "gpu-stack.llmops.io/config-sha256"
    template = applied[("Deployment", NS, "llm-gateway")]["spec"]["template"]
    assert set(template["metadata"]["annotations"]) == {digest}
    exported = tree[("Deployment", NS, "llm-gateway")]["spec"]["template"]["metadata"]
    template["metadata"]["annotations"][digest] = exported["annotations"][digest]
    assert {k: v for k, v in tree.items() if k[0] != "Namespace"} == applied


ODH = {"package": "opendatahub-operator", "namespace": "openshift-operators",
       "catalog": "community-operators", "channel": "fast",
       "starting_csv": "opendatahub-operator.v3.0.0", "install_mode": "AllNamespaces",
       "approval": "Manual", "applications_namespace": "opendatahub"}


def test_the_serving_platform_is_exported_as_the_role_applies_it(tmp_path):
    """Open Data Hub in openshift-operators: its Subscription alone (the cluster's own
    namespace and OperatorGroup are never written), the DSCInitialization and KServe
    managed in the DataScienceCluster, from the rendering the role's filter uses."""
    from ansible_collections.llmops.gpu_stack.plugins.filter.serving_platform import (
        serving_platform_object,
    )
    from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import olm

    site = site_stages()
    site["operators"]["serving_platform"] = ODH
    _export(tmp_path, site)
    tree = tmp_path / "tree"
    docs = _docs(tree, "base/*/*.yaml") | _docs(tree, "overlays/site-a/*/*.yaml")
    sub = docs[("Subscription", "openshift-operators", "opendatahub-operator")]
    spec = olm.OperatorSpec(**{k: v for k, v in ODH.items() if k != "applications_namespace"})
    # what olm_operator applies where it found the namespace's global-operators group
    (applied,) = olm.operator_manifests(spec, "fast", "global-operators")
    assert sub == applied and sub["spec"]["startingCSV"] == "opendatahub-operator.v3.0.0"
    assert ("Namespace", None, "openshift-operators") not in docs
    assert not [k for k in docs if k[0] == "OperatorGroup" and k[1] == "openshift-operators"]
    role_dsci = serving_platform_object("DSCInitialization", applications_namespace="opendatahub")
    # the fields the tree sets are the role's (the operator's own DSCI keeps its others)
    assert docs[("DSCInitialization", None, "default-dsci")] == {
        **role_dsci, "spec": {"applicationsNamespace": "opendatahub"}}
    assert docs[("DataScienceCluster", None, "default-dsc")] == serving_platform_object(
        "DataScienceCluster")
    # the site's own objects: in the overlay, not the collection's base
    overlay = yaml.safe_load((tmp_path / "tree/overlays/site-a/kustomization.yaml").read_text())
    assert {"operators/datasciencecluster-default-dsc.yaml",
            "operators/subscription-opendatahub-operator.yaml"} <= set(overlay["resources"])
    broken = copy.deepcopy(site)
    broken["operators"]["serving_platform"] = {**ODH, "applications_namespace": ""}
    with pytest.raises(InvalidInputError, match="applications_namespace"):
        _export(tmp_path / "again", broken)
    assert not (tmp_path / "again").exists()
