"""Run our OpenShift modules and roles against a lab API server; read back independently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import requests
import yaml
from kubernetes import client, config

from .. import playbook
from ..playbook import REPO

__all__ = ["OLM", "REPO", "api", "custom", "lab_env", "lab_post", "namespaces", "node_labels",
           "register_crds", "run_module", "run_play", "serving_platform", "stage_tiny_model"]

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


def stage_tiny_model(lab, work: Path, namespace: str, platform: str = "none") -> Path:
    """The OpenShift stage (GPU nodes labelled, 16 GPUs allocatable; the serving platform
    ``platform``, none unless asked, where the lab inventory installs Open Data Hub) and
    the tiny model staged into ``namespace``'s ``models`` volume by the storage stage; the
    model's local directory."""
    model = work / "tiny-llama"
    subprocess.run([sys.executable, "-m", "gpu_lab.tiny_model", str(model)], check=True,
                   capture_output=True)
    env = {"GPU_LAB_HOME": str(lab.settings.home)}
    rc, _t, out = run_play(lab, work, playbook=REPO / "playbooks" / "openshift.yml",
                           inventory=str(REPO / "inventories" / "lab"), env_extra=env,
                           extra=("-e", f"gpu_operators_serving_platform={platform}"),
                           json_out=False)
    assert rc == 0, out[-3000:]
    vars_file = work / "storage.json"
    vars_file.write_text(json.dumps({
        "gpu_stack_k8s_auth": {"kubeconfig": str(lab.kubeconfig)},
        "model_storage_namespace": namespace, "model_storage_model_dir": "tiny-llama",
        "model_storage_pvc": {"name": "models", "storage_class": "nfs-csi", "size": "1Gi"},
        "model_storage_source": {"type": "local", "local_path": str(model)}}))
    rc, _t, out = run_play(lab, work, playbook=REPO / "playbooks" / "storage.yml",
                           extra=("-e", f"@{vars_file}"), json_out=False)
    assert rc == 0, out[-3000:]
    return model


def register_crds(lab, *names: str) -> bool:
    """Create these upstream CRDs (from the lab's library) as an operator's install would;
    False when the library lacks one (no ../shared/crds)."""
    ext = client.ApiextensionsV1Api(api(lab))
    have = {c.metadata.name for c in ext.list_custom_resource_definition().items}
    for name in names:
        crd = lab.crd_library.get(name)
        if crd is None:
            return False
        if name not in have:
            ext.create_custom_resource_definition(crd)
    return True


def serving_platform(lab, work: Path, platform: str, *extra: str, **more):
    """The gpu_operators role's ``serving_platform`` phase (and its preflight) with
    ``gpu_operators_serving_platform: platform``; ``more``: other role variables."""
    play = work / "platform.yml"
    play.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False,
                                     "roles": ["llmops.gpu_stack.gpu_operators"]}]))
    values = work / "platform-vars.json"
    values.write_text(json.dumps({"gpu_stack_k8s_auth": {"kubeconfig": str(lab.kubeconfig)},
                                  "gpu_operators_serving_platform": platform,
                                  "gpu_operators_wait_timeout": 120, **more}))
    return run_play(lab, work, playbook=play,
                    extra=("--tags", "serving_platform", "-e", f"@{values}", *extra))
