"""The lab's nodes follow their VMs' power, as real nodes do: while a worker VM of the
vSphere simulator is off its node is NotReady (every condition Unknown, reason
NodeStatusUnknown) and its pods stay listed; powered on, the node is Ready with a new
boot ID, also after a power cycle shorter than a controller pass.

The VMs are driven with raw pyvmomi and the node read with the plain Kubernetes client.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gpu_lab.apiserver.server import LabServer
from gpu_lab.fixtures.k8s import api_client
from kubernetes import client

from .waiting import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.slow]
vsphere = pytest.importorskip("gpu_lab.vsphere")

VM = "ocp-worker-0"


def _vm(si: Any, name: str) -> Any:
    from pyVmomi import vim

    view = si.content.viewManager.CreateContainerView(si.content.rootFolder,
                                                      [vim.VirtualMachine], True)
    try:
        return next(vm for vm in view.view if vm.name == name)
    finally:
        view.Destroy()


def _run(task: Any) -> None:
    from pyVmomi import vim

    wait_for(lambda: task.info.state in (vim.TaskInfo.State.success, vim.TaskInfo.State.error),
             "vSphere task")
    assert task.info.state == vim.TaskInfo.State.success, task.info.error


def _ready(core: Any, name: str) -> tuple[str, str, str]:
    node = core.read_node(name)
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    return ready.status, ready.reason, node.status.node_info.boot_id


def test_node_follows_its_vm_power(vsphere_lab: Any, vsphere_si: Any,
                                   k8s_lab_factory: Callable[..., LabServer],
                                   tmp_path: Path) -> None:
    home = tmp_path / "lab"
    home.mkdir()
    vsphere.save_state(vsphere_lab, home / "vsphere.json")
    lab = k8s_lab_factory(home=home, workers=2)
    api = api_client(lab)
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "power"}})
    core.create_namespaced_pod("power", {"metadata": {"name": "app"}, "spec": {
        "nodeName": VM, "containers": [{"name": "c", "image": "registry.example/app:1"}]}})
    wait_for(lambda: core.read_namespaced_pod("app", "power").status.phase == "Running",
             "the pod running")
    status, reason, first_boot = _ready(core, VM)
    assert (status, reason) == ("True", "KubeletReady")
    vm = _vm(vsphere_si, VM)

    _run(vm.PowerOffVM_Task())
    wait_for(lambda: _ready(core, VM)[:2] == ("Unknown", "NodeStatusUnknown"),
             "the node NotReady while its VM is off")
    node = core.read_node(VM)
    assert {c.type: (c.status, c.reason) for c in node.status.conditions} == {
        t: ("Unknown", "NodeStatusUnknown")
        for t in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")}
    assert node.status.node_info.boot_id == first_boot
    assert [p.metadata.name for p in core.list_namespaced_pod("power").items] == ["app"]
    assert _ready(core, "ocp-worker-1") == ("True", "KubeletReady", "boot-ocp-worker-1")

    _run(vm.PowerOnVM_Task())
    wait_for(lambda: _ready(core, VM)[0] == "True", "the node Ready again")
    status, reason, second_boot = _ready(core, VM)
    assert reason == "KubeletReady" and second_boot not in (first_boot, "")
    node = core.read_node(VM)
    assert {c.type: c.status for c in node.status.conditions} == {
        "MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False",
        "Ready": "True"}

    # a power cycle faster than the controller's reads still is a new boot
    _run(vm.PowerOffVM_Task())
    _run(vm.PowerOnVM_Task())
    wait_for(lambda: _ready(core, VM)[2] != second_boot, "a new boot ID after a short cycle")
    assert _ready(core, VM)[:2] == ("True", "KubeletReady")
    assert _ready(core, "ocp-worker-1") == ("True", "KubeletReady", "boot-ocp-worker-1")
    api.close()
