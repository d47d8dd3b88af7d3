# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Submitting a vSphere task at most once.

A ``*_Task`` method that changes something (ReconfigVM, RebootHost...) is never
blindly retried: when its response is lost (connection reset, vCenter busy...) the
server may already have accepted the task, and a second submission would add a second
GPU or reboot a host twice. ``submit_task`` calls the method once; after a transient
failure it reads vCenter's task list (``TaskManager.recentTask``, an independent read)
for a task of that method on that entity queued since the submission began (by the
server's clock). If one is there, it is the task to wait on; only if none is there is
the method called again, after the client's backoff pause. A timeout waiting for the
answer is not transient (the task may still be created later): it fails the run.
"""

from __future__ import annotations

import time

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    TransientError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.finders import (
    load_objects,
)

try:
    from pyVmomi import vim
except ImportError:  # pragma: no cover
    vim = None

TASK_PROPS = ("info.entity", "info.name", "info.descriptionId", "info.queueTime")


def _stem(name) -> str:
    text = str(name or "").lower()
    return text[:-5] if text.endswith("_task") else text


def method_names(entity_type, method: str) -> set[str]:
    """How a task of ``method`` may be named: its wire name and its vmodl name
    (``ReconfigVM_Task``, ``Reconfigure``), compared without case and ``_Task``."""
    info = getattr(getattr(entity_type, method, None), "info", None)
    names = {_stem(method)}
    if info is not None:
        names |= {_stem(info.name), _stem(info.wsdlName)}
    return names


def task_names(record) -> set[str]:
    """The names a recorded task gives itself (``info.name`` is a method object when
    pyvmomi knows the method, else carries the raw name; ``descriptionId`` is
    ``<Type>.<method>``)."""
    name = record.get("info.name")
    info = getattr(name, "info", None)
    names = {_stem(info.name), _stem(info.wsdlName)} if info is not None else set()
    raw = getattr(name, "name", name)
    if isinstance(raw, str):
        names.add(_stem(raw))
    described = record.get("info.descriptionId")
    if described:
        names.add(_stem(str(described).rsplit(".", 1)[-1]))
    return names - {""}


def _ref_id(ref) -> str | None:
    return getattr(ref, "_moId", None)


def accepted_task(client, entity, method: str, since):
    """The newest task of ``method`` on ``entity`` queued at or after ``since``, or None."""
    manager = client.content.taskManager
    refs = client.call("reading vCenter's recent tasks", getattr, manager, "recentTask") or []
    records = load_objects(client, vim.Task, list(refs), TASK_PROPS)
    wanted = method_names(type(entity), method)
    found = [r for r in records
             if _ref_id(r.get("info.entity")) == _ref_id(entity)
             and task_names(r) & wanted
             and r.get("info.queueTime") is not None and r.get("info.queueTime") >= since]
    found.sort(key=lambda r: r.get("info.queueTime"))
    return found[-1].obj if found else None


def submit_task(client, entity, method: str, *, what: str, sleep=time.sleep, **kwargs):
    """Call ``entity.<method>(**kwargs)`` and return its task, never submitting it twice."""
    since = client.call(f"reading vCenter's time before {what}", client.si.CurrentTime)
    pauses = iter(client.backoff)
    while True:
        try:
            return client.call_once(what, getattr(entity, method), **kwargs)
        except TransientError:
            task = accepted_task(client, entity, method, since)
            if task is not None:
                return task
            pause = next(pauses, None)
            if pause is None:
                raise
            sleep(pause)
