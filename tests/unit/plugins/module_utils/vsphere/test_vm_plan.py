from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    ConflictError,
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere import vm_passthrough
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.finders import Record
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.gpu import host_gpus
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.vm_spec import VmState
from pyVmomi import vim

from .vsphere_fakes import PCI_IDS, host


def _static(pci):
    backing = vim.vm.device.VirtualPCIPassthrough.DeviceBackingInfo(
        id=pci, deviceId=str(0x20B5), vendorId=0x10DE, systemId="sys")
    return vim.vm.device.VirtualPCIPassthrough(key=1, backing=backing)


def _ctx(devices=(), *, version="vmx-19", firmware="efi", locked=False, extra=None,
         used=None, active=(True, True), hot_add=False):
    options = [vim.option.OptionValue(key=k, value=v) for k, v in (extra or {}).items()]
    rec = Record(obj=vim.VirtualMachine("vm-1"), props={
        "name": "w0", "runtime.powerState": "poweredOn", "config.hardware.device": list(devices),
        "config.hardware.memoryMB": 65536, "config.memoryReservationLockedToMax": locked,
        "config.extraConfig": options, "config.firmware": firmware, "config.version": version,
        "config.cpuHotAddEnabled": hot_add})
    h = host("esxi-0", enabled=(True, True), active=active)
    return vm_passthrough._Context(vm=VmState.from_record(rec), host=h, gpus=host_gpus(h),
                                   used_by_others=used or {})


def _req(**kw):
    return vm_passthrough.VmRequest(vm="w0", **kw)


def test_plan_adds_free_gpus_and_settings():
    plan = vm_passthrough._plan(_ctx(hot_add=True), _req(gpu_count=2))
    assert plan.add == list(PCI_IDS) and plan.remove == []
    assert plan.mmio_gb == 512
    assert plan.settings == {"memoryReservationLockedToMax": True, "cpuHotAddEnabled": False,
                             "extraConfig": {"pciPassthru.use64bitMMIO": "TRUE",
                                             "pciPassthru.64bitMMIOSizeGB": "512"}}


def test_plan_is_empty_when_already_done():
    ctx = _ctx([_static(p) for p in PCI_IDS], locked=True,
               extra={"pciPassthru.use64bitMMIO": "TRUE", "pciPassthru.64bitMMIOSizeGB": "512"})
    plan = vm_passthrough._plan(ctx, _req(gpu_count=2))
    assert not plan.devices_change and plan.settings == {}


def test_plan_shrinks_and_detaches():
    ctx = _ctx([_static(p) for p in PCI_IDS], locked=True)
    assert len(vm_passthrough._plan(ctx, _req(gpu_count=1)).remove) == 1
    assert len(vm_passthrough._plan(ctx, _req(state="absent")).remove) == 2


def test_plan_skips_gpus_of_other_vms():
    plan = vm_passthrough._plan(_ctx(used={PCI_IDS[0]: "w9"}), _req(gpu_count=1))
    assert plan.add == [PCI_IDS[1]]
    with pytest.raises(ConflictError, match=r"'0000:17:00\.0': 'w9'"):
        vm_passthrough._plan(_ctx(used={PCI_IDS[0]: "w9"}), _req(gpu_count=2))


def test_plan_refuses_inactive_gpus():
    with pytest.raises(ConflictError, match="passthrough not active"):
        vm_passthrough._plan(_ctx(active=(False, False)), _req(gpu_count=1))


def test_dynamic_needs_hw17_and_uses_device_ids():
    with pytest.raises(InvalidInputError, match="hardware version 17"):
        vm_passthrough._plan(_ctx(version="vmx-15"), _req(mode="dynamic"))
    plan = vm_passthrough._plan(_ctx(), _req(mode="dynamic", gpu_count=2))
    assert plan.add == [0x20B5, 0x20B5]


def test_bios_refused_and_mmio_override():
    with pytest.raises(InvalidInputError, match="bios firmware"):
        vm_passthrough._plan(_ctx(firmware="bios"), _req())
    plan = vm_passthrough._plan(_ctx(), _req(gpu_count=1, mmio_size_gb=1024))
    assert plan.mmio_gb == 1024


@pytest.mark.parametrize("request_", [_req(gpu_count=0), _req(gpu_count=17), _req(state="gone"),
                                      _req(mode="vgpu"), _req(mmio_size_gb=-1)])
def test_request_validation(request_):
    with pytest.raises(InvalidInputError):
        vm_passthrough._validate_request(request_)


def test_check_mode_diff_predicts_the_after_state():
    ctx = _ctx([_static(PCI_IDS[0])], locked=False)
    plan = vm_passthrough._plan(ctx, _req(gpu_count=2))
    before = ctx.vm.summary(vm_passthrough._matching(ctx))
    after = vm_passthrough._predicted(before, ctx, plan, on=True)
    assert before["gpus"] == [PCI_IDS[0]] and after["gpus"] == list(PCI_IDS)
    assert after["memory_reservation_locked_to_max"] is True
    assert (after["use_64bit_mmio"], after["mmio_size_gb"]) == (True, 512)
    empty = _ctx()
    dyn = vm_passthrough._plan(empty, _req(mode="dynamic", gpu_count=1))
    before_dyn = empty.vm.summary(vm_passthrough._matching(empty))
    predicted = vm_passthrough._predicted(before_dyn, empty, dyn, on=True)
    assert predicted["gpus"] == ["dynamic[0x20b5]"]
