"""kubernetes.core's k8s / k8s_info modules against the lab, through ansible-playbook."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gpu_lab.apiserver.server import LabServer
from gpu_lab.config import default_crds
from kubernetes import client

from ..playbook import run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _run_playbook(tmp_path: Path, lab: LabServer, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """The tasks through the shared runner; {register name: that task's result}."""
    # TMPDIR: kubernetes.core caches discovery in the temp dir, keyed by host:port and user
    env = {"K8S_AUTH_KUBECONFIG": str(lab.kubeconfig), "TMPDIR": str(tmp_path),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_HOME": str(tmp_path / "home")}
    rc, results, out = run_playbook(tmp_path, tasks, env=env)
    assert rc == 0, out[-6000:]
    assert len(results) == len(tasks), out[-6000:]
    return {t["register"]: r for t, r in zip(tasks, results, strict=True) if "register" in t}


def _status_of(result: dict[str, Any]) -> dict[str, Any]:
    """The API's Status, which kubernetes.core puts after "Failed to ... object: "."""
    return json.loads(result["msg"].split(": ", 1)[1])


def _k8s(definition: dict[str, Any], register: str, **options: Any) -> dict[str, Any]:
    return {"kubernetes.core.k8s": {"definition": definition, **options}, "register": register,
            "ignore_errors": True}


def test_k8s_module_round_trip(tmp_path: Path, k8s_lab: LabServer, k8s_namespace: str) -> None:
    ns = k8s_namespace
    ssa = {"apply": True, "server_side_apply": {"field_manager": "llmops-gpu-stack"}}
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "settings", "namespace": ns, "labels": {"app": "lab"}},
          "data": {"model": "tiny"}}
    changed_cm = {**cm, "data": {"model": "bigger"}}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "web", "namespace": ns},
                  "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                           "template": {"metadata": {"labels": {"app": "web"}},
                                        "spec": {"containers": [{"name": "c",
                                                                 "image": "nginx:1.27"}]}}}}
    route = {"apiVersion": "route.openshift.io/v1", "kind": "Route",
             "metadata": {"name": "bad", "namespace": ns},
             "spec": {"to": {"kind": "Service", "name": "web"}, "tls": {"termination": "bogus"}}}
    tasks = [
        _k8s(cm, "created", **ssa),
        _k8s(cm, "again", **ssa),
        {**_k8s(changed_cm, "checked", **ssa), "check_mode": True},
        {"kubernetes.core.k8s_info": {"kind": "ConfigMap", "namespace": ns,
                                      "label_selectors": ["app=lab"]}, "register": "info"},
        _k8s(deployment, "deployed", wait=True, wait_timeout=60),
        _k8s(route, "bad_route"),
        {"kubernetes.core.k8s": {"kind": "ConfigMap", "name": "settings", "namespace": ns,
                                 "state": "absent", "wait": True}, "register": "deleted"},
    ]
    r = _run_playbook(tmp_path, k8s_lab, tasks)
    assert r["created"]["changed"] is True and not r["created"].get("failed")
    assert r["again"]["changed"] is False
    assert r["checked"]["changed"] is True
    assert [i["metadata"]["name"] for i in r["info"]["resources"]] == ["settings"]
    assert r["deployed"]["changed"] is True and not r["deployed"].get("failed")
    assert r["deployed"]["result"]["status"]["availableReplicas"] == 2
    assert r["bad_route"]["failed"] is True
    assert r["bad_route"]["reason"] == "Unprocessable Entity"
    assert _status_of(r["bad_route"])["message"] == (
        'Route.route.openshift.io "bad" is invalid: spec.tls.termination: Unsupported value: '
        '"bogus": supported values: "edge", "reencrypt", "passthrough"')
    assert r["deleted"]["changed"] is True
    with pytest.raises(client.ApiException) as err:
        client.CoreV1Api(_admin(k8s_lab)).read_namespaced_config_map("settings", ns)
    assert err.value.status == 404


def _admin(lab: LabServer) -> Any:
    from gpu_lab.fixtures.k8s import api_client

    return api_client(lab)


def test_k8s_module_reports_invalid_raycluster_and_apply_conflict(
        tmp_path: Path, k8s_lab: LabServer, k8s_namespace: str) -> None:
    crd_file = default_crds() / "kuberay" / "ray.io_rayclusters.yaml"
    if not crd_file.exists():
        pytest.skip("upstream CRDs not available")
    ns = k8s_namespace
    worker_group = {"groupName": "g", "replicas": "one", "minReplicas": 0, "maxReplicas": 2,
                    "template": {"spec": {"containers": [{"name": "w", "image": "ray:2"}]}}}
    raycluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster",
                  "metadata": {"name": "bad", "namespace": ns},
                  "spec": {"headGroupSpec": {"template": {"spec": {"containers": [
                      {"name": "head", "image": "ray:2"}]}}},
                      "workerGroupSpecs": [worker_group]}}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned", "namespace": ns},
          "data": {"mode": "a"}}
    tasks = [
        # the CRD served before it is used: wait for its Established condition
        {"kubernetes.core.k8s": {"src": str(crd_file), "apply": True,
                                 "server_side_apply": {"field_manager": "lab-test"},
                                 "wait": True, "wait_timeout": 30,
                                 "wait_condition": {"type": "Established", "status": "True"}},
         "register": "crd"},
        _k8s(raycluster, "bad_raycluster"),
        _k8s(cm, "first", apply=True, server_side_apply={"field_manager": "team-a"}),
        _k8s({**cm, "data": {"mode": "b"}}, "conflict", apply=True,
             server_side_apply={"field_manager": "team-b"}),
        _k8s({**cm, "data": {"mode": "b"}}, "forced", apply=True,
             server_side_apply={"field_manager": "team-b", "force_conflicts": True}),
    ]
    r = _run_playbook(tmp_path, k8s_lab, tasks)
    assert not r["crd"].get("failed"), r["crd"]
    bad = r["bad_raycluster"]
    assert bad["failed"] is True and bad["reason"] == "Unprocessable Entity"
    assert _status_of(bad)["message"] == (
        'RayCluster.ray.io "bad" is invalid: spec.workerGroupSpecs[0].replicas: Invalid value: '
        '"string": spec.workerGroupSpecs[0].replicas in body must be of type integer: "string"')
    assert r["first"]["changed"] is True
    assert r["conflict"]["failed"] is True and r["conflict"]["reason"] == "Conflict"
    assert _status_of(r["conflict"])["message"] == (
        'Apply failed with 1 conflict: conflict with "team-a" using v1: .data.mode')
    assert r["forced"]["changed"] is True
    assert r["forced"]["result"]["data"] == {"mode": "b"}
