# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Host side of GPU passthrough: plan, apply (concurrently), report reboots, roll out.

``run(client, request)`` reads the fleet once, validates everything (unknown hosts,
hosts without matching GPUs, disconnected hosts, GPUs in use, running VMs on hosts
that must reboot) before the first write, then calls UpdatePassthruConfig on the hosts
that need a change, reads the state back, and, with ``reboot="if_needed"``, reboots the
hosts whose changes are still pending (see ``rollout.py``), holding each of their
clusters' rollout lock (``rollout_lock.py``) so that concurrent runs take turns.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    ConflictError,
    GpuStackError,
    InvalidInputError,
    NotFoundError,
    OperationFailedError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere import rollout
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.finders import (
    load_inventory,
    load_objects,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.gpu import (
    GpuFilter,
    host_gpus,
    select_hosts,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.rollout_lock import (
    RolloutLock,
)

try:
    from pyVmomi import vim
except ImportError:  # pragma: no cover
    vim = None

HOST_PROPS = (
    "config.pciPassthruInfo", "config.assignableHardwareBinding", "hardware.pciDevice",
    "runtime.connectionState", "runtime.inMaintenanceMode", "vm",
    "configManager.pciPassthruSystem", "capability.deviceRebindWithoutRebootSupported",
    "customValue",
)

REFRESH_PROPS = ("config.pciPassthruInfo", "config.assignableHardwareBinding",
                 "runtime.connectionState", "runtime.inMaintenanceMode", "customValue")


@dataclass
class Request:
    hosts: list = field(default_factory=list)
    clusters: list = field(default_factory=list)
    datacenter: str | None = None
    gpu_filter: GpuFilter = field(default_factory=GpuFilter)
    enabled: bool = True
    apply_now: bool = True
    reboot: str = "never"
    batch_size: int = 1
    parallel: int = 16
    reboot_timeout: float = 900.0
    task_timeout: float = 600.0
    lock_timeout: float = 3600.0
    check_mode: bool = False
    progress: object = None  # progress(line): which hosts are rebooting, at a steady pace


@dataclass
class HostPlan:
    name: str
    record: object
    gpus: list
    changes: list  # pci ids to flip
    rebind_supported: bool
    resume: bool = False  # left in maintenance mode by an earlier interrupted rollout

    @property
    def pending_after(self) -> bool:
        """Will a reboot be needed after the change (or is one already pending)?"""
        for gpu in self.gpus:
            flipped = gpu.pci_id in self.changes
            enabled = not gpu.passthrough_enabled if flipped else gpu.passthrough_enabled
            active = enabled if flipped and self.rebind_supported else gpu.passthrough_active
            if enabled != active:
                return True
        return False


def _state(gpus) -> dict:
    return {g.pci_id: {"enabled": g.passthrough_enabled, "active": g.passthrough_active}
            for g in gpus}


def plan(inventory, req: Request, marker_key: int | None) -> list[HostPlan]:
    if req.reboot not in ("never", "if_needed"):
        raise InvalidInputError(f"reboot must be never or if_needed, got {req.reboot!r}")
    if req.batch_size < 1:
        raise InvalidInputError("batch_size must be at least 1")
    selected = select_hosts(inventory, req.hosts, req.clusters, req.datacenter)
    if not selected:
        raise NotFoundError("no ESXi host matches the selection")
    plans, problems = [], []
    for host in selected:
        gpus = [g for g in host_gpus(host) if req.gpu_filter.matches(g)]
        if not gpus:
            present = sorted({g.device_name for g in host_gpus(host)}) or ["no NVIDIA GPU"]
            problems.append(f"{host.name}: no GPU with {req.gpu_filter.describe()} "
                            f"(host has: {', '.join(present)})")
            continue
        state = str(host.get("runtime.connectionState"))
        if state != "connected":
            problems.append(f"{host.name}: host is {state}")
            continue
        changes = [g.pci_id for g in gpus if g.passthrough_enabled != req.enabled]
        if req.enabled:
            problems += [f"{host.name}: {g.pci_id} is not passthrough capable"
                         for g in gpus if g.pci_id in changes and not g.passthrough_capable]
        else:
            problems += [f"{host.name}: {g.pci_id} is in use by VM {g.bound_vm}"
                         for g in gpus if g.pci_id in changes and g.bound_vm]
        rebind = bool(host.get("capability.deviceRebindWithoutRebootSupported")) and req.apply_now
        in_mm = bool(host.get("runtime.inMaintenanceMode"))
        resume = rollout.has_marker(host, marker_key) and in_mm
        plans.append(HostPlan(host.name, host, gpus, changes, rebind, resume))
    if problems:
        raise ConflictError("cannot change GPU passthrough: " + "; ".join(problems),
                            problems=problems)
    return plans


def _running_vms(client, plans) -> dict:
    refs = [ref for p in plans for ref in (p.record.get("vm") or [])]
    records = load_objects(client, vim.VirtualMachine, refs, ["name", "runtime.powerState"])
    on = {r.obj._moId: r.name for r in records if str(r.get("runtime.powerState")) == "poweredOn"}
    return {p.name: [on[v._moId] for v in p.record.get("vm") or [] if v._moId in on] for p in plans}


def _update_host(client, hplan: HostPlan, req: Request) -> None:
    system = hplan.record.get("configManager.pciPassthruSystem")
    configs = [vim.host.PciPassthruConfig(id=pci, passthruEnabled=req.enabled,
                                          applyNow=req.apply_now)
               for pci in hplan.changes]
    client.call(f"updating passthrough on host {hplan.name}", system.UpdatePassthruConfig, configs)


def _apply(client, todo: list[HostPlan], req: Request) -> list[str]:
    """UpdatePassthruConfig on up to ``parallel`` hosts at a time; stop at the first failure."""
    done: list[str] = []
    width = max(1, min(req.parallel, len(todo) or 1))
    with ThreadPoolExecutor(max_workers=width) as pool:
        for start in range(0, len(todo), width):
            chunk = todo[start:start + width]
            futures = [(p.name, pool.submit(_update_host, client, p, req)) for p in chunk]
            failed = {}
            for name, fut in futures:
                try:
                    fut.result()
                    done.append(name)
                except GpuStackError as exc:
                    failed[name] = exc.msg
            if failed:
                first = sorted(failed)[0]
                raise OperationFailedError(
                    f"passthrough update failed on host {first}: {failed[first]}",
                    reason=failed[first], failures=failed, updated=sorted(done),
                    not_attempted=[p.name for p in todo[start + width:]],
                )
    return done


def run(client, req: Request) -> dict:
    """Plan and apply; a rolling reboot holds its clusters' lock (``rollout_lock.py``).

    The lock is taken before the plan that leads to writes, so a run that starts while
    another reboots the same cluster waits for it, then plans from what it left (the
    other's hosts in maintenance or rebooting are not mistaken for its own to resume).
    A rerun with nothing to do takes no lock."""
    marker_key = rollout.marker_key(client, create=False)
    inventory = load_inventory(client, host_props=HOST_PROPS)
    if req.reboot != "if_needed" or req.check_mode:
        return _run(client, req, inventory, marker_key, None)
    try:
        quiet = not any(p.changes or p.pending_after or p.resume
                        for p in plan(inventory, req, marker_key))
    except ConflictError:
        quiet = False  # e.g. a host another run is rebooting: decide under the lock
    if quiet:
        return _run(client, req, inventory, marker_key, None)
    selected = select_hosts(inventory, req.hosts, req.clusters, req.datacenter)
    targets = {inventory.host_cluster.get(h.name) or h.get("parent")._moId: h.get("parent")
               for h in selected}
    lease = req.reboot_timeout + 4 * req.task_timeout  # the update and one batch, at worst
    with RolloutLock(client, targets, lease=lease, timeout=req.lock_timeout) as lock:
        marker_key = rollout.marker_key(client, create=False)
        inventory = load_inventory(client, host_props=HOST_PROPS)
        return _run(client, req, inventory, marker_key, lock)


def _run(client, req: Request, inventory, marker_key, lock) -> dict:
    plans = plan(inventory, req, marker_key)
    to_change = [p for p in plans if p.changes]
    need_reboot = [p for p in plans if p.pending_after or p.resume]
    if req.reboot == "if_needed" and need_reboot:
        busy = {h: vms for h, vms in _running_vms(client, need_reboot).items() if vms}
        if busy:
            detail = "; ".join(f"{h}: {', '.join(v)}" for h, v in sorted(busy.items()))
            raise ConflictError(
                "hosts that must reboot still run VMs (power them off or migrate them first): "
                + detail, running_vms=busy)
    before = {p.name: _state(p.gpus) for p in plans}
    result = {"changed": bool(to_change) or (req.reboot == "if_needed" and bool(need_reboot)),
              "hosts_changed": [p.name for p in to_change], "rebooted": []}
    if req.check_mode:
        result["reboot_required"] = [p.name for p in need_reboot]
        after = {p.name: {pci: {"enabled": req.enabled if pci in p.changes else s["enabled"],
                                "active": s["active"]} for pci, s in before[p.name].items()}
                 for p in plans}
        return {**result, "diff": {"before": before, "after": after}, "gpus": _gpu_list(plans)}
    _apply(client, to_change, req)
    _refresh(client, inventory, [p.name for p in to_change])
    plans = plan(inventory, req, marker_key)
    pending = [p for p in plans if any(g.reboot_pending for g in p.gpus) or p.resume]
    if req.reboot == "if_needed" and pending:
        result["rebooted"] = rollout.reboot_hosts(
            client, pending, req, on_batch=lock.renew if lock is not None else None)
        _refresh(client, inventory, [p.name for p in pending])
        plans = plan(inventory, req, marker_key)
    result["reboot_required"] = [p.name for p in plans if any(g.reboot_pending for g in p.gpus)]
    after = {p.name: _state(p.gpus) for p in plans}
    return {**result, "diff": {"before": before, "after": after}, "gpus": _gpu_list(plans)}


def _refresh(client, inventory, names) -> None:
    """Re-read only what a change or reboot alters, only for those hosts."""
    by_name = inventory.host_by_name()
    refs = [by_name[n].obj for n in names]
    for rec in load_objects(client, vim.HostSystem, refs, ("name", *REFRESH_PROPS)):
        by_name[rec.name].props.update(rec.props)


def _gpu_list(plans) -> list[dict]:
    return [g.as_dict() for p in plans for g in p.gpus]
