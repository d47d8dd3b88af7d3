# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""A change made while a VM is off: its OpenShift node drained around the power cycle.

The order is: cordon and drain the node (``req.node``, a ``k8s.drain.NodeDrain``), power
the VM off, make the change, power it on, wait for the node to be Ready with a new boot,
uncordon it. A drain that cannot finish fails before the VM is touched. A change that
fails powers the VM on again and makes its node schedulable again before it is reported.
"""

from __future__ import annotations

from collections.abc import Callable

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    GpuStackError,
    InvalidInputError,
    OperationFailedError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.submit import submit_task
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.tasks import wait_for_task


def power(client, vm_obj, name: str, on: bool, timeout: float) -> None:
    what = f"powering {'on' if on else 'off'} VM {name}"
    task = submit_task(client, vm_obj, "PowerOnVM_Task" if on else "PowerOffVM_Task", what=what)
    wait_for_task(client, name, task, what=what, timeout=timeout)


def node_plan(req, vm_uuid: str | None) -> dict | None:
    """The node drain a power cycle of ``req.vm`` needs (reads only); None with
    ``req.drain`` off; refused without a way to reach the cluster."""
    if not req.drain:
        return None
    if req.node is None:
        raise InvalidInputError(
            f"VM {req.vm} must be powered off to change its GPUs, and its OpenShift node is "
            "cordoned and drained first: give k8s_auth (the cluster's credentials), or set "
            "drain: false if the VM is no cluster node or was drained already", vm=req.vm)
    return req.node.prepare(req.vm, vm_uuid)


def _restore_after_failure(req, exc: GpuStackError) -> str:
    try:
        req.node.restore()
    except GpuStackError as again:
        return f"{exc.msg}; the node was not made schedulable again: {again.msg}"
    return exc.msg


def change_while_off(client, vm_obj, req, change: Callable[[], None], *, cycle: bool,
                     power_on: bool, node: dict | None) -> None:
    """Run ``change()`` with the VM off: power-cycled (``cycle``, its node drained when
    ``node``) or left off (``power_on`` then powers it on afterwards)."""
    if node:
        req.node.drain()  # fails with the node cordoned and the VM untouched
    if cycle:
        power(client, vm_obj, req.vm, False, req.task_timeout)
    try:
        change()
    except GpuStackError as exc:
        msg = exc.msg
        if cycle:
            power(client, vm_obj, req.vm, True, req.task_timeout)
            msg = _restore_after_failure(req, exc) if node else msg
        raise OperationFailedError(f"VM {req.vm}: {msg}; nothing was changed",
                                   reason=exc.msg, vm=req.vm) from exc
    if cycle or power_on:
        power(client, vm_obj, req.vm, True, req.task_timeout)
    if node:
        req.node.restore()  # Ready with a new boot, then uncordoned
