# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The one task monitor: many vSphere tasks, one property read per poll.

Polls ``info.state``/``info.error`` of every pending task in a single
RetrievePropertiesEx through the common wait helper (monotonic clock, capped backoff,
overall timeout naming the tasks still running).
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    OperationFailedError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.wait import (
    WaitStatus,
    wait_for,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.faults import (
    fault_message,
    fault_name,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.finders import (
    load_objects,
)

try:
    from pyVmomi import vim
except ImportError:  # pragma: no cover
    vim = None

_DONE = ("success", "error")


def _error_text(error) -> str:
    """Text of a task's ``info.error``.

    pyvmomi usually hands back the fault itself (``msg`` taken from the localized
    message); a raw ``LocalizedMethodFault`` carries it in ``.fault``.
    """
    if error is None:
        return "unknown error"
    fault = getattr(error, "fault", None)
    if fault is None:
        return fault_message(error)
    message = getattr(error, "localizedMessage", "") or ""
    return f"{fault_name(fault)}: {message}" if message else fault_message(fault)


def wait_for_tasks(client, tasks: dict, *, what: str, timeout: float = 600.0,
                   interval: float = 0.05, max_interval: float = 2.0, **wait_kwargs) -> dict:
    """Wait for ``{name: task}``; return ``{name: result}`` or raise naming the failures.

    A failed task raises ``OperationFailedError`` with ``failed`` ({name: reason}) and
    ``succeeded`` (names); a timeout raises ``WaitTimeout`` listing the tasks still
    running.
    """
    if not tasks:
        return {}
    names = {id(t): n for n, t in tasks.items()}
    finished: dict[str, object] = {}

    def _check() -> WaitStatus:
        pending = [t for n, t in tasks.items() if n not in finished]
        records = load_objects(client, vim.Task, pending,
                               ["info.state", "info.error", "info.result"])
        by_ref = {r.obj._moId: r for r in records}
        for task in pending:
            rec = by_ref.get(task._moId)
            if rec is not None and str(rec.get("info.state")) in _DONE:
                finished[names[id(task)]] = rec
        return WaitStatus.of(list(tasks), list(finished), noun=f"{what} tasks finished")

    wait_for(_check, timeout=timeout, what=what, interval=interval, backoff=1.5,
             max_interval=max_interval, **wait_kwargs)
    failed = {n: _error_text(r.get("info.error")) for n, r in finished.items()
              if str(r.get("info.state")) == "error"}
    if failed:
        first = next(iter(failed))
        raise OperationFailedError(
            f"{what} failed on {', '.join(failed)}: {failed[first]}",
            reason=failed[first], failures=failed,
            succeeded=[n for n in tasks if n not in failed],
        )
    return {n: r.get("info.result") for n, r in finished.items()}


def wait_for_task(client, name: str, task, *, what: str, timeout: float = 600.0, **kwargs):
    """Wait for one task; return its result."""
    return wait_for_tasks(client, {name: task}, what=what, timeout=timeout, **kwargs)[name]
