# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""One rolling reboot per cluster at a time, whichever controller runs it.

The lock must be taken on vCenter itself (a lock file only serialises one controller),
and taking it must be one atomic server-side step (reading a custom attribute and then
setting it lets two runs both see it free). vCenter has such a step:
``CustomFieldsManager.AddCustomFieldDef`` refuses a name that exists (``DuplicateName``).
So the lock of a cluster is the custom attribute definition
``llmops.gpu_stack.rollout_lock.<cluster moid>``: whoever creates it holds the lock, and
removing it (by its key, which is never reused) releases it. While held, the cluster
carries the attribute's value ``holder=<who>;expires=<vCenter time>``: a lease, renewed
before each batch, so a run that died (killed controller) does not block the cluster
for ever: a waiter removes a lock whose lease has passed by vCenter's clock, by key, so
of several waiters one only succeeds, and never a lock taken since.
Operators see the holder on the cluster and can release a lock by deleting the attribute.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
import uuid

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    GpuStackError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.wait import (
    WaitStatus,
    wait_for,
)

PREFIX = "llmops.gpu_stack.rollout_lock."


def lock_name(entity) -> str:
    return PREFIX + entity._moId


def _holder_id() -> str:
    return f"{socket.gethostname()} pid {os.getpid()} run {uuid.uuid4().hex[:8]}"


def parse_value(value: str) -> tuple[str, datetime.datetime | None]:
    """``holder=...;expires=<iso>`` -> (holder, expires); an empty value has neither."""
    fields = dict(part.split("=", 1) for part in (value or "").split(";") if "=" in part)
    expires = fields.get("expires")
    try:
        when = datetime.datetime.fromisoformat(expires) if expires else None
    except ValueError:
        when = None
    return fields.get("holder", ""), when


class RolloutLock:
    """``with RolloutLock(client, {name: cluster_ref}, lease=..., timeout=...) as lock:``"""

    def __init__(self, client, entities: dict, *, lease: float, timeout: float,
                 interval: float = 1.0, clock=time.monotonic, sleep=time.sleep):
        self.client = client
        self.entities = dict(sorted(entities.items()))  # one order: no deadlock
        self.lease = lease
        self.timeout = timeout
        self.interval = interval
        self.holder = _holder_id()
        self.held: dict[str, int] = {}  # name -> field key
        self._clock, self._sleep = clock, sleep
        self._empty_since: dict[int, float] = {}

    @property
    def _cfm(self):
        return self.client.content.customFieldsManager

    def _now(self) -> datetime.datetime:
        return self.client.call("reading vCenter's time", self.client.si.CurrentTime)

    def _set(self, name: str, key: int) -> None:
        expires = self._now() + datetime.timedelta(seconds=self.lease)
        self.client.call(f"recording the rollout lock of {name}", self._cfm.SetField,
                         entity=self.entities[name], key=key,
                         value=f"holder={self.holder};expires={expires.isoformat()}")

    def _current(self, name: str):
        """(key, value) of the existing lock of ``name``; key None if it is gone."""
        wanted = lock_name(self.entities[name])
        fields = self.client.call("reading custom attributes", getattr, self._cfm, "field") or []
        key = next((f.key for f in fields if f.name == wanted), None)
        if key is None:
            return None, ""
        values = self.client.call(f"reading the rollout lock of {name}", getattr,
                                  self.entities[name], "customValue") or []
        mine = [v.value for v in values if v.key == key]
        return key, (mine[-1] if mine else "")

    def _expired(self, key: int, value: str) -> bool:
        _holder, expires = parse_value(value)
        if expires is not None:
            return expires < self._now()
        # Created but never stamped (its holder died in between): one lease of grace.
        first = self._empty_since.setdefault(key, self._clock())
        return self._clock() - first > self.lease

    def _remove(self, key: int) -> None:
        try:
            self.client.call("removing a rollout lock", self._cfm.RemoveCustomFieldDef, key=key)
        except GpuStackError as exc:
            if exc.details.get("fault") not in ("NotFound", "InvalidArgument"):
                raise

    def _try(self, name: str) -> WaitStatus:
        entity = self.entities[name]
        try:
            created = self.client.call_once(
                f"taking the rollout lock of {name}", self._cfm.AddCustomFieldDef,
                name=lock_name(entity), moType=type(entity))
        except GpuStackError as exc:
            if exc.details.get("fault") != "DuplicateName":
                raise
            key, value = self._current(name)
            if key is not None and self._expired(key, value):
                self._remove(key)
                return WaitStatus(done=False, missing=(name,), progress="expired lock removed")
            holder, expires = parse_value(value)
            who = f"held by {holder} until {expires.isoformat()}" if holder else "being taken"
            return WaitStatus(done=False, missing=(f"{name} ({who})",),
                              progress=f"rolling reboot of {name} {who}")
        self.held[name] = created.key
        self._set(name, created.key)
        return WaitStatus(done=True, present=(name,))

    def __enter__(self):
        for name in self.entities:
            wait_for(lambda n=name: self._try(n), timeout=self.timeout,
                     what=f"the rollout lock of {name} (another rolling reboot runs there)",
                     interval=self.interval, backoff=1.5, max_interval=10.0,
                     clock=self._clock, sleep=self._sleep)
        return self

    def renew(self) -> None:
        """Push the lease on (called before each batch)."""
        for name, key in self.held.items():
            self._set(name, key)

    def __exit__(self, *exc_info):
        for key in self.held.values():
            self._remove(key)
        self.held.clear()
