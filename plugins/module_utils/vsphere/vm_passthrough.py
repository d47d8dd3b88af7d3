# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""VM side of GPU passthrough: attach or detach N GPUs, idempotently.

Reads (1) the fleet's hosts and VM names/hosts in one call, (2) the full state of the
VMs on the target VM's host in one call, (3) QueryConfigTarget of that host when static
DirectPath devices are added. Everything is validated before the first write; then at
most: power off (only with ``allow_power_cycle``), one ReconfigVM, power on; a VM that must
be powered off has its OpenShift node drained around it (``vm_power.py``) unless ``drain``
is off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere import vm_power, vm_spec
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.finders import (
    HOST_GPU_PROPS,
    load_inventory,
    load_objects,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.gpu import (
    MAX_PASSTHROUGH_DEVICES,
    GpuFilter,
    host_gpus,
    mmio_size_gb,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.submit import submit_task
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.tasks import wait_for_task

try:
    from pyVmomi import vim
except ImportError:  # pragma: no cover
    vim = None


@dataclass
class VmRequest:
    vm: str
    gpu_count: int = 1
    state: str = "present"
    mode: str = "static"
    gpu_filter: GpuFilter = field(default_factory=GpuFilter)
    allow_power_cycle: bool = False
    power_on: bool = False
    mmio_size_gb: int | None = None
    task_timeout: float = 600.0
    check_mode: bool = False
    drain: bool = True
    node: object | None = None  # k8s.drain.NodeDrain: prepare(), drain(), restore()


@dataclass
class _Context:
    vm: vm_spec.VmState
    host: object
    gpus: list  # matching GPUs of the host
    used_by_others: dict  # pci id -> VM name


def _validate_request(req: VmRequest) -> None:
    if req.state not in ("present", "absent"):
        raise InvalidInputError(f"state must be present or absent, got {req.state!r}")
    if req.mode not in ("static", "dynamic"):
        raise InvalidInputError(f"mode must be static or dynamic, got {req.mode!r}")
    if req.state == "present" and not 1 <= req.gpu_count <= MAX_PASSTHROUGH_DEVICES:
        raise InvalidInputError(
            f"gpu_count must be 1-{MAX_PASSTHROUGH_DEVICES} (a VM takes at most "
            f"{MAX_PASSTHROUGH_DEVICES} PCI passthrough devices), got {req.gpu_count}")
    if req.mmio_size_gb is not None and req.mmio_size_gb <= 0:
        raise InvalidInputError("mmio_size_gb must be positive")


def _load(client, req: VmRequest) -> _Context:
    inv = load_inventory(client, host_props=HOST_GPU_PROPS, vm_props=("runtime.host",))
    vms = inv.vm_by_name()
    if req.vm not in vms:
        raise NotFoundError(f"VM {req.vm} not found", vm=req.vm)
    host_ref = vms[req.vm].get("runtime.host")
    host_id = host_ref._moId if host_ref is not None else None
    host = next((h for h in inv.hosts if h.obj._moId == host_id), None)
    if host is None:
        raise NotFoundError(f"VM {req.vm} has no host")
    names = {v.obj._moId: v.name for v in inv.vms}
    on_host = list(host.get("vm") or [])
    loaded = load_objects(client, vim.VirtualMachine, on_host, vm_spec.VM_PROPS)
    records = {r.name: r for r in loaded}
    vm = vm_spec.VmState.from_record(records[req.vm])
    used = {}
    for name, rec in records.items():
        if name == req.vm:
            continue
        for dev in vm_spec.passthrough_devices(rec.get("config.hardware.device")):
            pci = dev.pci_id or dev.assigned_id
            if pci:
                used[pci] = name
    all_gpus = host_gpus(host, names)
    for gpu in all_gpus:
        if gpu.bound_vm and gpu.bound_vm != req.vm:
            used.setdefault(gpu.pci_id, gpu.bound_vm)
    gpus = [g for g in all_gpus if req.gpu_filter.matches(g)]
    if not gpus:
        present = sorted({g.device_name for g in all_gpus}) or ["no NVIDIA GPU"]
        raise NotFoundError(f"host {host.name} of VM {req.vm} has no GPU with "
                            f"{req.gpu_filter.describe()} (host has: {', '.join(present)})")
    return _Context(vm=vm, host=host, gpus=gpus, used_by_others=used)


def _matching(ctx: _Context, mode: str | None = None) -> list:
    pci_ids = {g.pci_id for g in ctx.gpus}
    dev_ids = {int(g.device_id, 16) for g in ctx.gpus}
    out = []
    for dev in ctx.vm.passthrough:
        hit = dev.pci_id in pci_ids if dev.mode == "static" else bool(set(dev.device_ids) & dev_ids)
        if hit and (mode is None or dev.mode == mode):
            out.append(dev)
    return out


@dataclass
class _Plan:
    add: list = field(default_factory=list)  # pci ids (static) or device ids (dynamic)
    remove: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    mmio_gb: int | None = None

    @property
    def devices_change(self) -> bool:
        return bool(self.add or self.remove)


def _plan(ctx: _Context, req: VmRequest) -> _Plan:
    plan = _Plan()
    same = _matching(ctx, req.mode)
    other = [d for d in _matching(ctx) if d.mode != req.mode]
    if req.state == "absent":
        plan.remove = same + other
        return plan
    plan.remove = other + same[req.gpu_count:]
    need = req.gpu_count - min(len(same), req.gpu_count)
    free = [g for g in ctx.gpus if g.passthrough_active and g.pci_id not in ctx.used_by_others
            and g.pci_id not in {d.pci_id for d in same}]
    if need > len(free):
        bound = {g.pci_id: ctx.used_by_others[g.pci_id]
                 for g in ctx.gpus if g.pci_id in ctx.used_by_others}
        inactive = [g.pci_id for g in ctx.gpus if not g.passthrough_active]
        raise ConflictError(
            f"VM {req.vm} needs {need} more GPU(s) on host {ctx.host.name} but only {len(free)} "
            f"are free (in use by other VMs: {bound or 'none'}; passthrough not active: "
            f"{inactive or 'none'}; enable them with esxi_gpu_passthrough)",
            free=[g.pci_id for g in free], bound=bound, inactive=inactive)
    if req.mode == "dynamic":
        if ctx.vm.hw_version < 17:
            raise InvalidInputError(
                f"VM {req.vm}: Dynamic DirectPath I/O needs hardware version 17 or later, the VM "
                f"has vmx-{ctx.vm.hw_version}; upgrade it or use mode: static")
        plan.add = [int(g.device_id, 16) for g in free[:need]]
    else:
        plan.add = [g.pci_id for g in free[:need]]
    others = len(ctx.vm.passthrough) - len(plan.remove)
    if others + len(plan.add) > MAX_PASSTHROUGH_DEVICES:
        raise InvalidInputError(f"VM {req.vm} would have {others + len(plan.add)} PCI passthrough "
                                f"devices; at most {MAX_PASSTHROUGH_DEVICES} are allowed")
    _plan_settings(ctx, req, plan)
    return plan


def _plan_settings(ctx: _Context, req: VmRequest, plan: _Plan) -> None:
    memories = [g.memory_gb for g in ctx.gpus[:1] if g.memory_gb] * req.gpu_count
    if req.mmio_size_gb is None and not memories:
        raise InvalidInputError(
            f"the memory of {ctx.gpus[0].device_name} is not known: give mmio_size_gb")
    plan.mmio_gb = req.mmio_size_gb or mmio_size_gb(memories)
    if ctx.vm.firmware != "efi":
        raise InvalidInputError(
            f"VM {req.vm} boots with {ctx.vm.firmware} firmware; large-BAR GPUs need EFI "
            "(changing firmware needs a guest reinstall, so it is not done automatically)")
    vm = ctx.vm
    if not vm.locked:
        plan.settings["memoryReservationLockedToMax"] = True
    if vm.cpu_hot_add:
        plan.settings["cpuHotAddEnabled"] = False
    extra = {}
    if vm.extra.get(vm_spec.MMIO_ON, "").upper() != "TRUE":
        extra[vm_spec.MMIO_ON] = "TRUE"
    if vm.extra.get(vm_spec.MMIO_SIZE) != str(plan.mmio_gb):
        extra[vm_spec.MMIO_SIZE] = str(plan.mmio_gb)
    if extra:
        plan.settings["extraConfig"] = extra


def _config_spec(client, ctx: _Context, plan: _Plan, req: VmRequest):
    changes = [vm_spec.remove(d) for d in plan.remove]
    if plan.add and req.mode == "static":
        browser = ctx.vm.record.get("environmentBrowser")
        target = client.call(f"querying passthrough devices of host {ctx.host.name}",
                             browser.QueryConfigTarget, host=ctx.host.obj)
        entries = {e.pciDevice.id: e for e in target.pciPassthrough or []
                   if isinstance(e, vim.vm.PciPassthroughInfo)}
        missing = [p for p in plan.add if p not in entries]
        if missing:
            raise ConflictError(f"host {ctx.host.name} does not offer {missing} for passthrough")
        changes += [vm_spec.static_add(entries[p], -100 - i) for i, p in enumerate(plan.add)]
    elif plan.add:
        changes += [vm_spec.dynamic_add(d, -100 - i) for i, d in enumerate(plan.add)]
    spec = vim.vm.ConfigSpec(deviceChange=changes)
    for key, value in plan.settings.items():
        if key == "extraConfig":
            spec.extraConfig = [vm_spec.option(k, v) for k, v in value.items()]
        else:
            setattr(spec, key, value)
    return spec


def _predicted(before: dict, ctx: _Context, plan: _Plan, on: bool) -> dict:
    """The ``--diff`` after-state in check mode, from the plan."""
    kept = [d.label() for d in _matching(ctx) if d not in plan.remove]
    added = [a if isinstance(a, str) else f"dynamic[0x{a:04x}]" for a in plan.add]
    after = dict(before, gpus=sorted(kept + added),
                 power_state="poweredOn" if on else before["power_state"])
    if "memoryReservationLockedToMax" in plan.settings:
        after["memory_reservation_locked_to_max"] = True
    if "cpuHotAddEnabled" in plan.settings:
        after["cpu_hot_add"] = False
    extra = plan.settings.get("extraConfig", {})
    if vm_spec.MMIO_ON in extra:
        after["use_64bit_mmio"] = True
    if vm_spec.MMIO_SIZE in extra:
        after["mmio_size_gb"] = int(extra[vm_spec.MMIO_SIZE])
    return after


def run(client, req: VmRequest) -> dict:
    _validate_request(req)
    ctx = _load(client, req)
    plan = _plan(ctx, req)
    reconfig = plan.devices_change or bool(plan.settings)
    was_on = ctx.vm.power_state == "poweredOn"
    power_cycle = reconfig and was_on
    if power_cycle and not req.allow_power_cycle:
        raise ConflictError(
            f"VM {req.vm} is powered on; changing its GPUs needs it powered off: set "
            "allow_power_cycle: true (the guest is hard powered off and on) or power it off first",
            vm=req.vm)
    node = vm_power.node_plan(req, ctx.vm.record.get("config.uuid")) if power_cycle else None
    power_on = not was_on and req.power_on
    before = ctx.vm.summary(_matching(ctx))
    result = {"changed": reconfig or power_on, "vm": req.vm, "host": ctx.host.name,
              "power_cycled": power_cycle and not req.check_mode, "mmio_size_gb": plan.mmio_gb,
              "node": node}
    if req.check_mode or not result["changed"]:
        after = _predicted(before, ctx, plan, on=was_on or power_on)
        return {**result, "diff": {"before": before, "after": after}}
    vm_obj = ctx.vm.record.obj

    def _reconfigure():
        if not reconfig:
            return
        spec = _config_spec(client, ctx, plan, req)
        task = submit_task(client, vm_obj, "ReconfigVM_Task", what=f"reconfiguring VM {req.vm}",
                           spec=spec)
        wait_for_task(client, req.vm, task, what=f"reconfiguring VM {req.vm}",
                      timeout=req.task_timeout)

    vm_power.change_while_off(client, vm_obj, req, _reconfigure, cycle=power_cycle,
                              power_on=power_on, node=node)
    after_ctx = _load(client, req)
    return {**result, "gpus": [d.label() for d in _matching(after_ctx)],
            "diff": {"before": before, "after": after_ctx.vm.summary(_matching(after_ctx))}}
