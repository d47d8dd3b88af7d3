# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Rolling host reboots: maintenance mode, reboot, wait for reconnection, exit.

Hosts go ``batch_size`` at a time; the rollout stops at the first failed batch. A host
this code put into maintenance mode carries a custom attribute (``MARKER``) until it
leaves maintenance mode again, so a rerun after an interrupted rollout (host never
came back in time) finishes the job instead of leaving the host in maintenance mode,
while hosts an operator put into maintenance mode stay there (rebooted if they need it,
never taken out). Every task is submitted once (``submit.py``); concurrent rollouts
take turns per cluster (``rollout_lock.py``, held by the caller).
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    GpuStackError,
    OperationFailedError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.wait import (
    WaitStatus,
    wait_for,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.finders import (
    load_objects,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.submit import (
    submit_task,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.tasks import (
    wait_for_tasks,
)

try:
    from pyVmomi import vim
except ImportError:  # pragma: no cover
    vim = None

MARKER = "llmops.gpu_stack.passthrough_rollout"


def marker_key(client, create: bool) -> int | None:
    """Key of the rollout custom attribute on hosts (created on demand)."""
    cfm = client.content.customFieldsManager
    fields = client.call("reading custom attributes", getattr, cfm, "field") or []
    for f in fields:
        if f.name == MARKER:
            return f.key
    if not create:
        return None
    created = client.call("creating the rollout custom attribute", cfm.AddCustomFieldDef,
                          name=MARKER, moType=vim.HostSystem)
    return created.key


def has_marker(host, key: int | None) -> bool:
    if key is None:
        return False
    return any(cv.key == key and cv.value for cv in host.get("customValue") or [])


def _set_marker(client, hosts, key: int, value: str) -> None:
    cfm = client.content.customFieldsManager
    for plan in hosts:
        client.call(f"marking host {plan.name}", cfm.SetField,
                    entity=plan.record.obj, key=key, value=value)


def _tasks(client, plans, what: str, method: str, **kwargs) -> dict:
    return {p.name: submit_task(client, p.record.obj, method, what=f"{what} on host {p.name}",
                                **kwargs)
            for p in plans}


def _say(req, line: str) -> None:
    """Report a progress line through the request's ``progress(line)``, if any."""
    progress = getattr(req, "progress", None)
    if progress is not None:
        progress(line)


def _wait_reconnected(client, plans, boot_before: dict, timeout: float, req=None) -> None:
    refs = [p.record.obj for p in plans]

    def _check() -> WaitStatus:
        records = load_objects(client, vim.HostSystem, refs,
                               ["name", "runtime.connectionState", "runtime.bootTime"])
        back = [r.name for r in records
                if str(r.get("runtime.connectionState")) == "connected"
                and r.get("runtime.bootTime") != boot_before.get(r.name)]
        status = WaitStatus.of([p.name for p in plans], back, noun="hosts reconnected")
        return WaitStatus(done=status.done, present=status.present, missing=status.missing,
                          progress=f"rebooting {', '.join(status.missing) or 'none'}: "
                                   f"{status.progress}")

    wait_for(_check, timeout=timeout, what="hosts to reconnect after reboot",
             interval=0.2, backoff=1.5, max_interval=10.0,
             progress=lambda status, elapsed: _say(req, f"+{elapsed:.0f}s {status.progress}"))


def _boot_times(client, plans) -> dict:
    records = load_objects(client, vim.HostSystem, [p.record.obj for p in plans],
                           ["name", "runtime.bootTime"])
    return {r.name: r.get("runtime.bootTime") for r in records}


def _roll_batch(client, batch, req, key: int) -> list[str]:
    needs_reboot = [p for p in batch if any(g.reboot_pending for g in p.gpus)]
    enter = [p for p in batch if not p.record.get("runtime.inMaintenanceMode")]
    wait_for_tasks(client, _tasks(client, enter, "entering maintenance mode",
                                  "EnterMaintenanceMode_Task", timeout=0),
                   what="entering maintenance mode", timeout=req.task_timeout)
    _set_marker(client, enter, key, "entered")
    if needs_reboot:
        boot_before = _boot_times(client, needs_reboot)
        _say(req, f"rebooting {', '.join(p.name for p in needs_reboot)}")
        wait_for_tasks(client, _tasks(client, needs_reboot, "rebooting",
                                      "RebootHost_Task", force=False),
                       what="host reboot", timeout=req.task_timeout)
        _wait_reconnected(client, needs_reboot, boot_before, req.reboot_timeout, req)
    # Only the hosts this rollout (or an interrupted earlier one, by the marker) put
    # into maintenance mode leave it; an operator's maintenance is theirs to end.
    entered = {p.name for p in enter}
    ours = [p for p in batch if p.name in entered or p.resume]
    wait_for_tasks(client, _tasks(client, ours, "exiting maintenance mode",
                                  "ExitMaintenanceMode_Task", timeout=0),
                   what="exiting maintenance mode", timeout=req.task_timeout)
    _set_marker(client, ours, key, "")
    return [p.name for p in needs_reboot]


def reboot_hosts(client, plans, req, on_batch=None) -> list[str]:
    """Reboot the hosts of ``plans`` in batches; return the names rebooted.

    ``on_batch()`` runs before each batch (the caller renews its lock's lease)."""
    key = marker_key(client, create=True)
    rebooted: list[str] = []
    for start in range(0, len(plans), req.batch_size):
        batch = plans[start:start + req.batch_size]
        try:
            if on_batch is not None:
                on_batch()
            rebooted += _roll_batch(client, batch, req, key)
        except GpuStackError as exc:
            names = ", ".join(p.name for p in batch)
            rest = [p.name for p in plans[start + req.batch_size:]]
            raise OperationFailedError(
                f"rolling reboot stopped at host(s) {names}: {exc.msg}. The host(s) may be "
                "left in maintenance mode; rerun after fixing the cause to resume",
                reason=exc.msg, failed_hosts=[p.name for p in batch], rebooted=rebooted,
                not_attempted=rest,
            ) from exc
    return rebooted
