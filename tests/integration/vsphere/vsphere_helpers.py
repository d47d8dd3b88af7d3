"""Run modules as Ansible runs them (ansible-playbook in a subprocess) and read the
simulator directly with raw pyvmomi, independently of the code under test."""

from __future__ import annotations

from pathlib import Path

from pyVmomi import vim

from .. import playbook


def connection_env(lab) -> dict:
    """The simulator's connection in VMWARE_*, for the shared runner's ``env``."""
    return {**lab.connection_env(), "ANSIBLE_LOCALHOST_WARNING": "false",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}


def run_tasks(lab, tasks: list, tmp_path: Path, *, check=False, diff=False, verbose="",
              env_extra: dict | None = None, inventory: str | None = None, json_out=True):
    """Run tasks on localhost with the shared runner; return (rc, per-task results, raw
    output)."""
    extra = [flag for flag, on in (("--check", check), ("--diff", diff), (verbose, verbose))
             if on]
    return playbook.run_playbook(tmp_path, tasks, inventory=inventory or "localhost,",
                                 extra=tuple(extra), json_out=json_out, timeout=600,
                                 env={**connection_env(lab), **(env_extra or {})})


def run_module(lab, tmp_path, module: str, args: dict, **kwargs):
    """One module call; returns (rc, result, output)."""
    task = {"name": module, f"llmops.gpu_stack.{module}": args, "register": "out"}
    rc, results, out = run_tasks(lab, [task], tmp_path, **kwargs)
    return rc, (results[0] if results else {}), out


# ---- raw pyvmomi reads (independent of the collection) -------------------------------

def _view(si, kind):
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        return list(view.view)
    finally:
        view.Destroy()


def hosts(si) -> dict:
    return {h.name: h for h in _view(si, vim.HostSystem)}


def vms(si) -> dict:
    return {v.name: v for v in _view(si, vim.VirtualMachine)}


def gpu_state(host) -> dict:
    """{pci id: (enabled, active)} for the NVIDIA devices of a host."""
    nvidia = {d.id for d in host.hardware.pciDevice if d.vendorId & 0xFFFF == 0x10DE}
    return {i.id: (i.passthruEnabled, i.passthruActive)
            for i in host.config.pciPassthruInfo if i.id in nvidia}


def vm_gpus(vm) -> list:
    out = []
    for dev in vm.config.hardware.device:
        if isinstance(dev, vim.vm.device.VirtualPCIPassthrough):
            b = dev.backing
            if isinstance(b, vim.vm.device.VirtualPCIPassthrough.DynamicBackingInfo):
                out.append(("dynamic", b.allowedDevice[0].deviceId & 0xFFFF, b.assignedId))
            else:
                out.append(("static", b.id, b.deviceId, b.systemId))
    return sorted(out, key=str)


def vm_state(vm) -> dict:
    extra = {o.key: o.value for o in vm.config.extraConfig}
    return {
        "power": str(vm.runtime.powerState),
        "gpus": vm_gpus(vm),
        "locked": bool(vm.config.memoryReservationLockedToMax),
        "mmio": extra.get("pciPassthru.use64bitMMIO"),
        "mmio_size": extra.get("pciPassthru.64bitMMIOSizeGB"),
        "hot_add": bool(vm.config.cpuHotAddEnabled),
    }


def snapshot(si) -> dict:
    """Everything the collection may change, read straight from the simulator."""
    return {
        "hosts": {n: {"gpus": gpu_state(h), "mm": h.runtime.inMaintenanceMode,
                      "conn": str(h.runtime.connectionState)}
                  for n, h in hosts(si).items()},
        "vms": {n: vm_state(v) for n, v in vms(si).items()},
    }


def enable_passthrough_raw(si, names=None) -> None:
    """Enable passthrough of every NVIDIA GPU (applyNow), bypassing the collection."""
    for name, host in hosts(si).items():
        if names and name not in names:
            continue
        configs = [vim.host.PciPassthruConfig(id=pci, passthruEnabled=True, applyNow=True)
                   for pci in gpu_state(host)]
        host.configManager.pciPassthruSystem.UpdatePassthruConfig(configs)
