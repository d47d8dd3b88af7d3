"""Bad inputs: each fails with a clear error and leaves the simulator unchanged."""

from __future__ import annotations

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from .vsphere_helpers import enable_passthrough_raw, run_tasks, snapshot, vms

pytestmark = pytest.mark.lab

VM = "llmops.gpu_stack.vm_gpu_passthrough"
HOST = "llmops.gpu_stack.esxi_gpu_passthrough"
INFO = "llmops.gpu_stack.esxi_gpu_info"

# (id, module, args, expected substring of the error message)
CASES = [
    ("unknown host", HOST, {"esxi_hostnames": ["esxi-99"]}, "unknown ESXi host(s): esxi-99"),
    ("unknown cluster", HOST, {"clusters": ["nope"]}, "unknown cluster(s): nope"),
    ("unknown VM", VM, {"vm_name": "ocp-worker-42"}, "VM ocp-worker-42 not found"),
    ("GPU model absent", HOST, {"esxi_hostnames": ["esxi-0"], "gpu_models": ["h100-pcie"]},
     "esxi-0: no GPU with model in ['h100-pcie']"),
    ("GPU model absent on VM host", VM, {"vm_name": "ocp-worker-1", "gpu_models": ["l40s"]},
     "has no GPU with model in ['l40s']"),
    ("more GPUs than the host has", VM,
     {"vm_name": "ocp-worker-1", "gpu_count": 3, "allow_power_cycle": True},
     "needs 3 more GPU(s) on host esxi-1 but only 2 are free"),
    ("GPU bound to another VM", VM,
     {"vm_name": "ocp-spare", "gpu_count": 1, "allow_power_cycle": True},
     "'0000:17:00.0': 'ocp-worker-0'"),
    ("VM on without allow_power_cycle", VM, {"vm_name": "ocp-worker-1", "gpu_count": 1},
     "VM ocp-worker-1 is powered on; changing its GPUs needs it powered off"),
    ("dynamic DirectPath on hardware version 13", VM,
     {"vm_name": "ocp-old", "mode": "dynamic", "gpu_count": 1},
     "Dynamic DirectPath I/O needs hardware version 17 or later, the VM has vmx-13"),
    ("more than 16 devices", VM, {"vm_name": "ocp-worker-1", "gpu_count": 17},
     "gpu_count must be 1-16"),
    ("BIOS firmware", VM, {"vm_name": "ocp-bios", "gpu_count": 1}, "boots with bios firmware"),
    ("bad device id", HOST, {"device_ids": ["xyz"]}, "not a PCI device id: 'xyz'"),
    ("passthrough not active yet", VM,
     {"vm_name": "ocp-worker-3", "gpu_count": 1, "allow_power_cycle": True},
     "passthrough not active: ['0000:17:00.0', '0000:31:00.0']"),
    ("wrong password", INFO, {"password": "not-the-password"},
     "login refused (wrong user name or password)"),
    ("TLS failure with validate_certs on", INFO, {"ca_path": "__SYSTEM__"},
     "TLS verification failed"),
    ("missing hostname", INFO, {"hostname": ""}, "missing vSphere connection options: hostname"),
]


def _prepare(si):
    """esxi-0..2 active; ocp-worker-0 holds both GPUs of esxi-0; extra VMs for edge cases."""
    enable_passthrough_raw(si, ["esxi-0", "esxi-1", "esxi-2"])
    all_vms = vms(si)
    worker0 = all_vms["ocp-worker-0"]
    WaitForTask(worker0.PowerOffVM_Task())
    host = worker0.runtime.host
    target = worker0.environmentBrowser.QueryConfigTarget(host=host)
    changes = []
    for i, entry in enumerate(target.pciPassthrough):
        backing = vim.vm.device.VirtualPCIPassthrough.DeviceBackingInfo(
            id=entry.pciDevice.id, deviceId=str(entry.pciDevice.deviceId),
            vendorId=entry.pciDevice.vendorId, systemId=entry.systemId, deviceName="gpu")
        changes.append(vim.vm.device.VirtualDeviceSpec(
            operation="add",
            device=vim.vm.device.VirtualPCIPassthrough(key=-10 - i, backing=backing)))
    spec = vim.vm.ConfigSpec(deviceChange=changes, memoryReservationLockedToMax=True, extraConfig=[
        vim.option.OptionValue(key="pciPassthru.use64bitMMIO", value="TRUE"),
        vim.option.OptionValue(key="pciPassthru.64bitMMIOSizeGB", value="512")])
    WaitForTask(worker0.ReconfigVM_Task(spec))
    WaitForTask(worker0.PowerOnVM_Task())
    folder, pool = worker0.parent, worker0.resourcePool
    extra = (("ocp-spare", "vmx-19", "efi", host),
             ("ocp-old", "vmx-13", "efi", all_vms["ocp-worker-1"].runtime.host),
             ("ocp-bios", "vmx-19", "bios", all_vms["ocp-worker-2"].runtime.host))
    for name, version, firmware, h in extra:
        cfg = vim.vm.ConfigSpec(name=name, guestId="rhel8_64Guest", version=version,
                                firmware=firmware, memoryMB=4096, numCPUs=2,
                                files=vim.vm.FileInfo(vmPathName="[LocalDS_0]"))
        WaitForTask(folder.CreateVM_Task(config=cfg, pool=pool, host=h))


def test_bad_inputs_fail_clearly_and_change_nothing(vsphere_lab, vsphere_si, tmp_path):
    _prepare(vsphere_si)
    before = snapshot(vsphere_si)
    tasks = []
    for case_id, module, args, _expected in CASES:
        task = {"name": case_id, module: dict(args), "ignore_errors": True}
        if args.get("ca_path") == "__SYSTEM__":
            # validate_certs stays on, but only the system trust store is used: the
            # lab's own CA is not in it, so the handshake must fail.
            del task[module]["ca_path"]
            task["environment"] = {"VMWARE_CA_PATH": ""}
        tasks.append(task)
    _rc, results, out = run_tasks(vsphere_lab, tasks, tmp_path)
    assert len(results) == len(CASES), out
    for (case_id, _module, _args, expected), result in zip(CASES, results, strict=True):
        assert result.get("failed") is True, f"{case_id}: did not fail: {result}"
        assert expected in result["msg"], f"{case_id}: {result['msg']!r}"
        print(f"{case_id}: {result['msg']}")
    assert len(CASES) >= 12
    assert snapshot(vsphere_si) == before
