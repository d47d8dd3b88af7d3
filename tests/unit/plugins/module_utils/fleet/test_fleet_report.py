"""fleet.report.build: rows, problems and the planner's hardware from plain read data."""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.fleet import report


def _gpu(host, pci, vm=None, enabled=True, active=True, model="a100-80g", memory=80):
    return {"host": host, "pci_id": pci, "model": model, "memory_gb": memory,
            "device_name": "GA100 [A100 PCIe 80GB]", "passthrough_capable": True,
            "passthrough_enabled": enabled, "passthrough_active": active,
            "reboot_pending": enabled != active, "bound_vm": vm}


def _site(n=3, gpus=2):
    hosts = {f"esxi-{i}": {"cluster": "c", "gpus": [
        _gpu(f"esxi-{i}", f"0000:{17 + j}:00.0", f"ocp-worker-{i}") for j in range(gpus)]}
        for i in range(n)}
    vms = {f"ocp-worker-{i}": {"host": f"esxi-{i}", "power_state": "poweredOn",
                               "passthrough": gpus} for i in range(n)}
    vms["other-vm"] = {"host": "esxi-0", "power_state": "poweredOn", "passthrough": 0}
    return {"hosts": hosts, "vms": vms}


def _nodes(n=3, gpus=2, labels=None):
    out = [{"name": f"ocp-worker-{i}", "allocatable": gpus,
            "labels": {"nvidia.com/gpu.present": "true", **(labels or {})}} for i in range(n)]
    out.append({"name": "ocp-master-0", "allocatable": 0, "labels": {}})
    return out


def _workers(n=3):
    return [{"host": f"esxi-{i}", "vm": f"ocp-worker-{i}", "node": None, "gpus": None}
            for i in range(n)]


def test_healthy_fleet_rows_and_hardware():
    out = report.build(_site(), _nodes(), _workers(), gpus_per_vm=2)
    assert out["problems"] == []
    assert [r["host"] for r in out["fleet"]] == ["esxi-0", "esxi-1", "esxi-2"]
    row = out["fleet"][1]
    assert (row["vm"], row["node"], row["vm_gpus"], row["vm_gpus_in_use"],
            row["node_allocatable_gpus"]) == ("ocp-worker-1", "ocp-worker-1", 2, 2, 2)
    assert row["gpus"] == [{"model": "a100-80g", "memory_gib": 80, "count": 2}]
    assert row["passthrough"] == {"capable": 2, "enabled": 2, "active": 2, "reboot_pending": 0}
    assert out["hardware"] == {"nodes": 3, "gpus_per_node": 2, "gpu_memory_gib": 80.0,
                               "gpu_model": "a100-80g"}
    assert out["hardware_sources"]["gpu_memory_gib"] == "vsphere"
    assert out["summary"].endswith("no problem")
    assert out["table"][0].startswith("HOST") and "ocp-worker-2" in out["table"][3]


def test_vm_and_node_that_lost_gpus_are_named():
    site = _site()
    site["vms"]["ocp-worker-1"]["passthrough"] = 1
    nodes = _nodes()
    nodes[2]["allocatable"] = 0
    out = report.build(site, nodes, _workers(), gpus_per_vm=2)
    assert out["problems"] == [
        "VM ocp-worker-1 lost GPUs: 1 of 2 passthrough GPU(s) configured",
        "node ocp-worker-2 lost its GPUs: 0 allocatable nvidia.com/gpu (expected 2)",
    ]
    assert "lost its GPUs" in out["table"][3] and out["table"][1].endswith("ok")
    # the planner leaves the node without GPUs out
    assert out["hardware"]["nodes"] == 2 and out["hardware"]["gpus_per_node"] == 2


def test_expected_count_from_the_node_label_and_short_node():
    nodes = _nodes(labels={"gpu-stack.llmops.io/gpus-expected": "2"})
    nodes[0]["allocatable"] = 1
    out = report.build(_site(), nodes, _workers())
    assert out["problems"] == ["node ocp-worker-0 lost GPUs: 1 of 2 allocatable nvidia.com/gpu"]
    # 2 nodes x 2 GPUs (4) beats 3 nodes x 1 GPU (3)
    assert (out["hardware"]["nodes"], out["hardware"]["gpus_per_node"]) == (2, 2)


def test_missing_vm_powered_off_vm_missing_node_and_reboot_pending():
    site = _site()
    site["vms"]["ocp-worker-0"]["power_state"] = "poweredOff"
    site["hosts"]["esxi-1"]["gpus"][0].update(passthrough_active=False, reboot_pending=True)
    del site["vms"]["ocp-worker-2"]
    nodes = [n for n in _nodes() if n["name"] != "ocp-worker-1"]
    out = report.build(site, nodes, _workers(), gpus_per_vm=2)
    assert out["problems"] == [
        "VM ocp-worker-0 is poweredOff: its GPUs are not in use",
        "host esxi-1: 1 GPU(s) wait for a reboot to change passthrough",
        "VM ocp-worker-1: no OpenShift node",
        "VM ocp-worker-2: not found in vCenter",
    ]


def test_workers_found_without_a_list():
    out = report.build(_site(), _nodes(), [], gpus_per_vm=0)
    assert [r["vm"] for r in out["fleet"]] == ["ocp-worker-0", "ocp-worker-1", "ocp-worker-2"]
    assert out["problems"] == []


def test_cluster_alone_uses_the_feature_discovery_labels():
    labels = {"nvidia.com/gpu.product": "NVIDIA-A100-80GB-PCIe", "nvidia.com/gpu.memory": "81920",
              "gpu-stack.llmops.io/vm": "vm-x"}
    out = report.build(None, _nodes(labels=labels), [])
    assert [r["node"] for r in out["fleet"]] == ["ocp-worker-0", "ocp-worker-1", "ocp-worker-2"]
    assert out["fleet"][0]["vm"] == "vm-x"
    assert out["hardware"] == {"nodes": 3, "gpus_per_node": 2, "gpu_memory_gib": 80.0,
                               "gpu_model": "NVIDIA-A100-80GB-PCIe"}
    assert set(out["hardware_sources"].values()) == {"cluster"}


def test_no_gpu_node_no_hardware():
    out = report.build(None, _nodes(gpus=0, labels={"nvidia.com/gpu.present": "false"}), [])
    assert out["fleet"] == [] and out["hardware"] == {}


def test_node_summary_reads_allocatable():
    node = {"metadata": {"name": "n", "labels": {"a": "b"}},
            "status": {"allocatable": {"nvidia.com/gpu": "4", "cpu": "8"}}}
    assert report.node_summary(node) == {"name": "n", "allocatable": 4, "labels": {"a": "b"}}
    assert report.node_summary({"metadata": {"name": "m"}})["allocatable"] == 0


@pytest.mark.parametrize(("workers", "per_vm", "message"), [
    ([{"gpus": 2}], 0, "give the ESXi host, the VM or both"),
    ([{"vm": "a", "gpus": 0}], 0, "gpus must be a whole number >= 1"),
    ([{"vm": "a"}, {"vm": "a"}], 0, "a is listed twice"),
    ([], -1, "gpus_per_vm must be a whole number >= 0"),
])
def test_bad_workers(workers, per_vm, message):
    with pytest.raises(InvalidInputError, match=message):
        report.parse_workers(workers, per_vm)


def test_parse_workers_default_count():
    assert report.parse_workers([{"host": "h", "vm": "v", "node": ""}], 2) == [
        {"host": "h", "vm": "v", "node": None, "gpus": 2}]
