"""Run modules as Ansible runs them (ansible-playbook in a subprocess) and read the
simulator directly with raw pyvmomi, independently of the code under test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from pyVmomi import vim

REPO = Path(__file__).resolve().parents[3]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))


def connection_env(lab) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VMWARE_", "ANSIBLE_"))}
    env.update(lab.connection_env())
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"),
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    return env


def run_tasks(lab, tasks: list, tmp_path: Path, *, check=False, diff=False, verbose="",
              env_extra: dict | None = None, inventory: str | None = None, json_out=True):
    """Run tasks on localhost; return (rc, per-task results, raw output)."""
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    path = tmp_path / f"play-{len(list(tmp_path.glob('play-*.yml')))}.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    env = connection_env(lab)
    if json_out:
        env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    env.update(env_extra or {})
    cmd = [ANSIBLE_PLAYBOOK, "-i", inventory or "localhost,", "-c", "local", str(path)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if verbose:
        cmd.append(verbose)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    results = []
    if json_out:
        try:
            data = json.loads(proc.stdout)
            results = [t["hosts"]["localhost"] for p in data["plays"] for t in p["tasks"]]
        except (ValueError, KeyError):
            results = []
    return proc.returncode, results, proc.stdout + proc.stderr


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
