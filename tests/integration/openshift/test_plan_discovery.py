"""playbooks/plan.yml alone, with the lab inventory: the planner's hardware comes from
what the cluster says (allocatable nvidia.com/gpu per node, GPU Feature Discovery's
product and memory labels), the inventory's explicit keys win, and the fleet report is
written and shown. A lab API server without controllers and without vSphere: the test
sets the nodes' GPUs itself, as the GPU Operator would."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from kubernetes import client

from ..playbook import lab_first_model
from .k8s_helpers import REPO, api, run_play

pytestmark = pytest.mark.lab


def _advertise(core, node: str, gpus: int) -> None:
    core.patch_node(node, {"metadata": {"labels": {
        "nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-L40S",
        "nvidia.com/gpu.memory": "46068"}}})
    status = core.read_node_status(node).status
    gpu = {"nvidia.com/gpu": str(gpus)}
    core.patch_node_status(node, {"status": {"allocatable": {**(status.allocatable or {}), **gpu},
                                             "capacity": {**(status.capacity or {}), **gpu}}})


@pytest.fixture(scope="module")
def lab(k8s_lab_factory):
    lab = k8s_lab_factory(controllers=False)
    home = lab.settings.home
    subprocess.run([sys.executable, "-m", "gpu_lab.tiny_model",
                    str(home / "models" / "tiny-llama")], check=True, capture_output=True)
    return lab


def _plan(lab, tmp_path, extra_vars=None):
    return run_play(lab, tmp_path, playbook=REPO / "playbooks" / "plan.yml",
                    inventory=str(REPO / "inventories" / "lab"), local=False,
                    vars_file={**lab_first_model(), **(extra_vars or {})},
                    env_extra={"GPU_LAB_HOME": str(lab.settings.home)})


def _written(lab, name):
    return json.loads((lab.settings.home / "plan" / name).read_text())


def test_hardware_discovered_from_the_cluster_then_rerun_unchanged(lab, tmp_path):
    core = client.CoreV1Api(api(lab))
    for i in range(8):
        _advertise(core, f"ocp-worker-{i}", 4 if i < 6 else 0)

    run = _plan(lab, tmp_path)
    assert run.rc == 0, run.output[-4000:]
    hardware = _written(lab, "serving-plan.json")["hardware"]
    # 46068 MiB = 45 GiB per GPU and 4 GPUs per node from the cluster; the lab inventory
    # caps the nodes at 3 (serving_plan_max_nodes) and says no NVLink / RDMA
    assert hardware == {"nodes": 3, "gpus_per_node": 4, "gpu_memory_gib": 45.0,
                        "gpu_model": "NVIDIA-L40S", "nvlink": False, "rdma": False,
                        "total_gpus": 12, "gpu_memory_gib_used": 45.0,
                        "gpu_memory_source": "as given (no CUDA-reported figure known "
                                             "for 'NVIDIA-L40S')"}
    fleet = _written(lab, "fleet-report.json")
    alloc = {n.metadata.name: int((n.status.allocatable or {}).get("nvidia.com/gpu", "0"))
             for n in core.list_node().items}
    assert {r["node"]: r["node_allocatable_gpus"] for r in fleet["fleet"]} == {
        f"ocp-worker-{i}": alloc[f"ocp-worker-{i}"] for i in range(8)}
    assert fleet["problems"] == [f"node ocp-worker-{i} lost its GPUs: 0 allocatable "
                                 "nvidia.com/gpu" for i in (6, 7)]
    shown = [r["msg"] for r in run.results if isinstance(r.get("msg"), list)
             and len(r["msg"]) > 1 and r["msg"][1].startswith("HOST")]
    assert len(shown) == 1 and shown[0][0] == fleet["summary"]
    assert [line.split()[2] for line in shown[0][2:]] == [f"ocp-worker-{i}" for i in range(8)]

    again = _plan(lab, tmp_path)
    assert again.rc == 0, again.output[-4000:]
    assert again.stats["localhost"]["changed"] == 0


def test_explicit_hardware_wins_over_discovery(lab, tmp_path):
    core = client.CoreV1Api(api(lab))
    for i in range(8):
        _advertise(core, f"ocp-worker-{i}", 4)
    run = _plan(lab, tmp_path, {"serving_plan_hardware": {
        "gpus_per_node": 2, "gpu_memory_gib": 24, "gpu_model": "typed", "nvlink": False}})
    assert run.rc == 0, run.output[-4000:]
    hardware = _written(lab, "serving-plan.json")["hardware"]
    assert (hardware["nodes"], hardware["gpus_per_node"], hardware["gpu_memory_gib"],
            hardware["gpu_model"]) == (3, 2, 24.0, "typed")


def test_no_gpu_found_and_nothing_typed_fails_clearly(lab, tmp_path):
    core = client.CoreV1Api(api(lab))
    for i in range(8):
        _advertise(core, f"ocp-worker-{i}", 0)
    run = _plan(lab, tmp_path, {"serving_plan_output_dir": str(tmp_path / "plan")})
    assert run.rc != 0
    assert "The planner needs nodes, gpus_per_node and gpu_memory_gib" in run.output
    assert not (tmp_path / "plan" / "serving-plan.json").exists()
