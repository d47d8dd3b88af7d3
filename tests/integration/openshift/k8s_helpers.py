"""Run our OpenShift modules and roles against a lab API server; read back independently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import requests
import yaml
from kubernetes import client, config

REPO = Path(__file__).resolve().parents[3]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
OLM = "operators.coreos.com/v1alpha1"


def lab_env(lab) -> dict:
    """The credentials the way an AWX OpenShift credential passes them: K8S_AUTH_*.

    Without a lab (None): no credentials at all, and none of the caller's ANSIBLE_*."""
    drop = ("K8S_AUTH_",) if lab is not None else ("K8S_AUTH_", "ANSIBLE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"), ANSIBLE_NOCOLOR="1")
    if lab is not None:
        env.update(K8S_AUTH_KUBECONFIG=str(lab.kubeconfig), K8S_AUTH_CONTEXT="lab-admin")
    return env


def run_play(lab, tmp_path: Path, tasks: list | None = None, *, playbook: Path | None = None,
             extra: tuple = (), env_extra: dict | None = None, json_out: bool = True,
             inventory: str = "localhost,", vars_file: dict | None = None):
    """ansible-playbook on localhost with this venv's Python; (rc, task results, output).

    lab: a LabServer whose admin credentials go in K8S_AUTH_*, or None. vars_file: extra
    vars written to a file and passed as ``-e @file`` (kept out of the command line)."""
    index = len(list(tmp_path.glob("play-*.yml")))
    if playbook is None:
        playbook = tmp_path / f"play-{index}.yml"
        playbook.write_text(yaml.safe_dump(
            [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}], sort_keys=False))
    args = list(extra)
    if vars_file is not None:
        path = tmp_path / f"vars-{index}.yml"
        path.write_text(yaml.safe_dump(vars_file))
        args += ["-e", f"@{path}"]
    env = lab_env(lab)
    if json_out:
        env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    env.update(env_extra or {})
    cmd = [ANSIBLE_PLAYBOOK, "-i", inventory, "-c", "local", "-e",
           f"ansible_python_interpreter={sys.executable}", str(playbook), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900,
                          check=False, cwd=REPO)
    results = []
    if json_out:
        try:
            data = json.loads(proc.stdout)
            results = [t["hosts"]["localhost"] for p in data["plays"] for t in p["tasks"]
                       if "localhost" in t["hosts"]]
        except (ValueError, KeyError):
            results = []
    return proc.returncode, results, proc.stdout + proc.stderr


def run_module(lab, tmp_path: Path, module: str, args: dict, **kwargs):
    task = {"name": module, f"llmops.gpu_stack.{module}": args}
    rc, results, out = run_play(lab, tmp_path, [task], **kwargs)
    return rc, (results[0] if results else {}), out


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
