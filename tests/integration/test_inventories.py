"""Each shipped inventory loads and passes every role's preflight in check mode against
the lab: ``site.yml --tags plan,preflight --check`` with ``inventories/lab`` and with
``inventories/example``, one lab (``gpu-lab up``) for both.

The example is pointed at the lab by extra vars only (vCenter, cluster auth, the
endpoint to validate); its files are not edited. Two things the lab cannot mirror are
given too, and said here: the simulator names its ESXi hosts ``esxi-<n>`` (it cannot
take the example's FQDNs), so stage 1's host -> VM map comes from a group of the lab's
hosts (``esxi_gpu_passthrough_hosts_group``) while every other stage-1 input (GPU
model, GPUs per VM) is the example's; and a fresh lab in check mode has no allocatable
GPU to discover, so the lab inventory's plan is given the hardware stages 1-3 would
make discoverable. The planner runs (tag ``plan``) because the serving stage's
preflight checks its plan. Check mode is read back from the API server: nothing was
created.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from .playbook import REPO, base_env, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.slow]

GPU_LAB = str(Path(sys.executable).with_name("gpu-lab"))
# A task of each role's preflight that must have run (not skipped) for each inventory.
PREFLIGHT = {
    "esxi_gpu_passthrough": "Each host has enough GPUs that no other VM holds",
    "ocp_gpu_nodes": "Preflight - the GPU workers are known",
    "gpu_operators": "The KubeRay install method is known",
    "serving_plan": "Plan the serving layout",
    "ray_vllm": "Check that every model has a served name, a weights directory and a serving plan",
    "validate": "The endpoint inputs are usable",
}
# The key the validate preflight is given (no request is sent in a preflight).
KEY = "preflight-only-key"


@pytest.fixture(scope="module")
def lab_home(tmp_path_factory, _k8s_crd_cache):
    """A lab as a user starts it, sharing the session's parsed CRDs (the slow part of a
    first start) and with the test fixtures' fast simulated delays."""
    home = tmp_path_factory.mktemp("inventories-lab")
    env = base_env({"GPU_LAB_HOME": str(home), "GPU_LAB_CACHE": str(_k8s_crd_cache),
                    "GPU_LAB_TIME_SCALE": "0.02"})
    up = subprocess.run([GPU_LAB, "up"], env=env, capture_output=True, text=True,
                        timeout=600, check=False)
    try:
        assert up.returncode == 0 and "failed" not in up.stdout, up.stdout + up.stderr
        yield home
    finally:
        subprocess.run([GPU_LAB, "down"], env=env, capture_output=True, timeout=300,
                       check=False)


def _tasks(stdout: str) -> dict[str, dict]:
    """{task name: localhost's result} of an ansible.posix.json run; of a task that ran
    twice (the planner: in its play, skipped in the serving play's) the run that was
    not skipped."""
    out: dict[str, dict] = {}
    for play in json.loads(stdout)["plays"]:
        for task in play["tasks"]:
            result = task["hosts"].get("localhost", {})
            name = task["task"]["name"]
            if name not in out or out[name].get("skipped"):
                out[name] = result
    return out


def _preflight(tmp_path, lab_home, inventory: str, *extra: str, **more_vars):
    run = run_playbook(tmp_path, playbook=REPO / "playbooks" / "site.yml",
                       inventory=str(REPO / "inventories" / inventory), local=False,
                       extra=("--tags", "plan,preflight", "--check", *extra),
                       vars_file=more_vars, env={"GPU_LAB_HOME": str(lab_home)})
    assert run.rc == 0, run.output[-4000:]
    tasks = _tasks(run.stdout)
    for role, name in PREFLIGHT.items():
        result = tasks.get(f"llmops.gpu_stack.{role} : {name}")
        assert result is not None and not result.get("skipped"), f"{role}: {name!r} {result}"
    return tasks


def _assert_nothing_created(lab_home) -> None:
    """Read back from the lab's API server: check mode left no object of the stages."""
    api = config.new_client_from_config(str(lab_home / "kubeconfig"), context="lab-admin")
    core = client.CoreV1Api(api)
    assert core.list_persistent_volume_claim_for_all_namespaces().items == []
    assert "llm" not in {n.metadata.name for n in core.list_namespace().items}
    custom = client.CustomObjectsApi(api)
    subs = custom.list_cluster_custom_object("operators.coreos.com", "v1alpha1",
                                             "subscriptions")
    assert subs["items"] == []
    for node in core.list_node().items:
        assert "nvidia.com/gpu.present" not in (node.metadata.labels or {})


def _plans(tasks: dict) -> list[dict]:
    name = "Keep the plans as the facts serving_plans and serving_plan (the first model's)"
    result = tasks[f"llmops.gpu_stack.serving_plan : {name}"]
    return result["ansible_facts"]["serving_plans"]


def _plan(tasks: dict) -> dict:
    return _plans(tasks)[0]["plan"]


def test_the_lab_inventory_passes_every_preflight(tmp_path, lab_home):
    hardware = {"nodes": 3, "gpus_per_node": 2, "gpu_memory_gib": 80}
    tasks = _preflight(tmp_path, lab_home, "lab", serving_plan_hardware=hardware,
                       validate_api_key=KEY)
    # both models of the lab's list, tiny-llama with its forced layout on Ray
    plans = {p["name"]: p for p in _plans(tasks)}
    assert sorted(plans) == ["tiny-llama", "tiny-qwen"]
    llama, qwen = plans["tiny-llama"], plans["tiny-qwen"]
    assert (llama["backend"], llama["plan"]["tensor_parallel_size"],
            llama["plan"]["pipeline_parallel_size"]) == ("ray", 2, 2)
    assert (qwen["backend"], qwen["plan"]["tensor_parallel_size"],
            qwen["plan"]["replicas"]) == ("kserve", 1, 1)
    # its platform (Open Data Hub) checked against the lab's OpenShift before any write
    known = tasks["llmops.gpu_stack.gpu_operators : The serving platform's release is known "
                  "to work on this OpenShift"]
    assert not known.get("skipped") and "odh 3.0 on OpenShift 4.19" in known["msg"], known
    _assert_nothing_created(lab_home)


def test_the_example_inventory_passes_every_preflight(tmp_path, lab_home):
    vsphere = json.loads((lab_home / "vsphere.json").read_text())
    router = json.loads((lab_home / "router.json").read_text())
    lab_hosts = tmp_path / "lab-hosts.yml"
    lab_hosts.write_text(yaml.safe_dump({"all": {"children": {"lab_esxi_hosts": {"hosts": {
        f"esxi-{i}": {"esxi_worker_vm": f"ocp-worker-{i}"} for i in range(8)}}}}}))
    tasks = _preflight(
        tmp_path, lab_home, "example", "-i", str(lab_hosts),
        esxi_gpu_passthrough_vcenter={key: vsphere[key] for key in (
            "hostname", "port", "username", "password", "validate_certs", "ca_path")},
        esxi_gpu_passthrough_hosts_group="lab_esxi_hosts",
        gpu_stack_k8s_auth={"kubeconfig": str(lab_home / "kubeconfig"),
                            "context": "lab-admin"},
        validate_base_url=router["url"], validate_ca_path=router["ca"],
        validate_model="llama-3-70b", validate_api_key=KEY)
    # the hardware typed once in hardware.yml reached stage 1 and the planner
    typed = yaml.safe_load((REPO / "inventories/example/group_vars/all/hardware.yml")
                           .read_text())["gpu_stack_site_hardware"]
    info = tasks["llmops.gpu_stack.esxi_gpu_passthrough : Read GPUs of the mapped hosts "
                 "and where the worker VMs run"]
    assert info["invocation"]["module_args"]["gpu_models"] == [typed["gpu"]]
    hardware = _plan(tasks)["hardware"]
    assert (hardware["nodes"], hardware["gpus_per_node"]) == (8, typed["gpus_per_host"])
    assert hardware["gpu_memory_gib"] >= typed["gpu_memory_gib"] - 1
    _assert_nothing_created(lab_home)
