"""Run our OpenShift modules and roles against a lab API server; read back independently."""

from __future__ import annotations

from pathlib import Path

import requests
from kubernetes import client, config

from .. import playbook
from ..playbook import REPO

__all__ = ["OLM", "REPO", "api", "custom", "lab_env", "lab_post", "namespaces", "node_labels",
           "run_module", "run_play"]

OLM = "operators.coreos.com/v1alpha1"


def lab_env(lab) -> dict:
    """The credentials the way an AWX OpenShift credential passes them: K8S_AUTH_*.
    Without a lab (None): no credentials at all (the runner drops the caller's)."""
    if lab is None:
        return {}
    return {"K8S_AUTH_KUBECONFIG": str(lab.kubeconfig), "K8S_AUTH_CONTEXT": "lab-admin"}


def run_play(lab, tmp_path: Path, tasks: list | None = None, *, env_extra: dict | None = None,
             **kwargs):
    """The shared runner (integration/playbook.py) with the lab's admin credentials in
    K8S_AUTH_*; (rc, task results, output). lab: a LabServer, or None."""
    return playbook.run_playbook(tmp_path, tasks, env={**lab_env(lab), **(env_extra or {})},
                                 **kwargs)


def run_module(lab, tmp_path: Path, module: str, args: dict, *, env_extra: dict | None = None,
               **kwargs):
    """One module call with the lab's credentials; (rc, its result, output)."""
    return playbook.run_module(tmp_path, module, args,
                               env={**lab_env(lab), **(env_extra or {})}, **kwargs)


def api(lab) -> client.ApiClient:
    return config.new_client_from_config(str(lab.kubeconfig), context="lab-admin")


def node_labels(lab) -> dict[str, dict]:
    core = client.CoreV1Api(api(lab))
    return {n.metadata.name: dict(n.metadata.labels or {}) for n in core.list_node().items}


def custom(lab, group_version: str, plural: str, namespace: str) -> list[dict]:
    group, version = group_version.split("/")
    objs = client.CustomObjectsApi(api(lab))
    try:
        return objs.list_namespaced_custom_object(group, version, namespace, plural)["items"]
    except client.ApiException as exc:
        if exc.status == 404:
            return []
        raise


def namespaces(lab) -> set[str]:
    return {n.metadata.name for n in client.CoreV1Api(api(lab)).list_namespace().items}


def lab_post(lab, path: str, body: dict) -> dict:
    response = requests.post(f"{lab.url}{path}", json=body, timeout=10,
                             headers={"Authorization": f"Bearer {lab.admin_token}"},
                             verify=str(Path(lab.settings.k8s_dir) / "ca.crt"))
    response.raise_for_status()
    return response.json()


def lab_faults(lab) -> list:
    """The lab API server's fault rules not yet served (a served rule is gone)."""
    response = requests.get(f"{lab.url}/lab/faults", timeout=10,
                            headers={"Authorization": f"Bearer {lab.admin_token}"},
                            verify=str(Path(lab.settings.k8s_dir) / "ca.crt"))
    response.raise_for_status()
    return response.json()["faults"]


def lab_conflict(lab, verb: str, resource: str, ns: str | None, count: int = 1,
                 skip: int = 0) -> None:
    """The next ``count`` matching requests (after ``skip``) get the server's 409."""
    lab_post(lab, "/lab/faults", {"verb": verb, "resource": resource, "code": 409,
                                  "count": count, "namespace": ns, "skip": skip})
