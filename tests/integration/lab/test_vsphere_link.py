"""NFD + ClusterPolicy against the real vSphere simulator: exactly the nodes whose VMs have
powered-on passthrough GPUs become allocatable; a VM stripped of its GPUs loses them.

Needs ``gpu_lab.vsphere`` (the ESXi issue's simulator); skipped where it is absent.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpu_lab.apiserver.server import LabServer
from gpu_lab.fixtures.k8s import api_client, dynamic_client
from gpu_lab.gpu_inventory import VsphereGpuInventory
from kubernetes import client

from .waiting import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.slow]
vsphere = pytest.importorskip("gpu_lab.vsphere")


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # 4 hosts x 2 GPUs, 4 worker VMs; worker-3's VM is created without GPUs attached
    # by the simulator only when the ESXi role runs, so every VM starts GPU-less.
    lab = vsphere.start(vsphere.Topology(hosts=4, gpus_per_host=2),
                        run_dir=tmp_path_factory.mktemp("vsphere"))
    yield lab
    vsphere.stop(lab)


def _connect(lab: Any) -> Any:
    from pyVim.connect import SmartConnect

    context = ssl.create_default_context(cafile=lab.ca_path) if lab.ca_path else None
    return SmartConnect(host=lab.hostname, port=lab.port, user=lab.username, pwd=lab.password,
                        sslContext=context, disableSslCertValidation=context is None)


def _vm(si: Any, name: str) -> Any:
    from pyVmomi import vim

    view = si.content.viewManager.CreateContainerView(si.content.rootFolder,
                                                      [vim.VirtualMachine], True)
    try:
        return next(vm for vm in view.view if vm.name == name)
    finally:
        view.Destroy()


def _wait_task(task: Any) -> None:
    from pyVmomi import vim

    wait_for(lambda: task.info.state in (vim.TaskInfo.State.success, vim.TaskInfo.State.error),
             "vSphere task")
    assert task.info.state == vim.TaskInfo.State.success, task.info.error


def _attach_gpu(si: Any, vm_name: str) -> None:
    """What the ESXi role does: power off, add a passthrough GPU from the host, power on."""
    from pyVmomi import vim

    vm = _vm(si, vm_name)
    host = vm.runtime.host
    gpus = [d.id for d in host.hardware.pciDevice if d.vendorId == 0x10DE]
    host.configManager.pciPassthruSystem.UpdatePassthruConfig(
        [vim.host.PciPassthruConfig(id=pci, passthruEnabled=True, applyNow=True) for pci in gpus])
    if vm.runtime.powerState == vim.VirtualMachinePowerState.poweredOn:
        _wait_task(vm.PowerOffVM_Task())
    target = vm.environmentBrowser.QueryConfigTarget(host=vm.runtime.host)
    free = [p for p in target.pciPassthrough
            if p.pciDevice.vendorId == 0x10DE and "A100" in (p.pciDevice.deviceName or "")]
    assert free, "no passthrough GPU offered to the VM"
    device = free[0].pciDevice
    backing = vim.vm.device.VirtualPCIPassthrough.DeviceBackingInfo(
        id=device.id, deviceId=str(device.deviceId),  # as vm_gpu_passthrough writes it
        systemId=free[0].systemId, vendorId=device.vendorId, deviceName=device.deviceName)
    spec = vim.vm.ConfigSpec(
        memoryReservationLockedToMax=True, firmware="efi",
        extraConfig=[vim.option.OptionValue(key="pciPassthru.use64bitMMIO", value="TRUE"),
                     vim.option.OptionValue(key="pciPassthru.64bitMMIOSizeGB", value="256")],
        deviceChange=[vim.vm.device.VirtualDeviceSpec(
            operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
            device=vim.vm.device.VirtualPCIPassthrough(backing=backing, key=-100))])
    _wait_task(vm.ReconfigVM_Task(spec=spec))
    _wait_task(vm.PowerOnVM_Task())


def _strip_gpus(si: Any, vm_name: str) -> None:
    from pyVmomi import vim

    vm = _vm(si, vm_name)
    _wait_task(vm.PowerOffVM_Task())
    changes = [vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.remove, device=d)
        for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualPCIPassthrough)]
    _wait_task(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=changes)))
    _wait_task(vm.PowerOnVM_Task())


def test_gpu_nodes_follow_the_vms(simulator: Any, k8s_lab_factory: Callable[..., LabServer],
                                  tmp_path: Path) -> None:
    home = tmp_path / "lab"
    home.mkdir()
    vsphere.save_state(simulator, home / "vsphere.json")
    lab = k8s_lab_factory(home=home, workers=4,
                          gpu_inventory=VsphereGpuInventory(home / "vsphere.json", ttl=0.5))
    si = _connect(simulator)
    for name in ("ocp-worker-0", "ocp-worker-1", "ocp-worker-3"):
        _attach_gpu(si, name)
    api = api_client(lab)
    ext = client.ApiextensionsV1Api(api)
    for crd in ("nodefeaturediscoveries.nfd.openshift.io", "clusterpolicies.nvidia.com"):
        ext.create_custom_resource_definition(lab.crd_library.get(crd))
    dyn = dynamic_client(lab, api)
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "openshift-nfd"}})
    dyn.resources.get(api_version="nfd.openshift.io/v1", kind="NodeFeatureDiscovery").create(
        namespace="openshift-nfd", body={"apiVersion": "nfd.openshift.io/v1",
                                         "kind": "NodeFeatureDiscovery",
                                         "metadata": {"name": "nfd-instance"}, "spec": {}})
    from gpu_lab.controllers.olm_examples import examples

    dyn.resources.get(api_version="nvidia.com/v1", kind="ClusterPolicy").create(
        body=examples("gpu-operator-certified", "25.3.1")[0])

    def allocatable() -> dict[str, str]:
        return {n.metadata.name: (n.status.allocatable or {}).get("nvidia.com/gpu", "0")
                for n in core.list_node(label_selector="node-role.kubernetes.io/worker").items}

    wait_for(lambda: allocatable() == {"ocp-worker-0": "1", "ocp-worker-1": "1",
                                       "ocp-worker-2": "0", "ocp-worker-3": "1"},
             "GPUs on the workers whose VMs have them")
    product = core.read_node("ocp-worker-0").metadata.labels["nvidia.com/gpu.product"]
    assert product == "NVIDIA-A100-80GB-PCIe"
    _strip_gpus(si, "ocp-worker-3")
    wait_for(lambda: allocatable()["ocp-worker-3"] == "0", "worker-3 losing its GPU")
    node = core.read_node("ocp-worker-3")
    assert "feature.node.kubernetes.io/pci-10de.present" not in node.metadata.labels
