"""What every controller shares: level-triggered reconcile passes over the API service.

A controller names the resources it watches; any change to one marks it dirty and the
manager runs ``reconcile()`` (a full pass) soon after on the server's loop. ``reconcile``
may return a number of seconds after which it wants another pass (for simulated delays).
Writes go through the same ``ApiService`` as clients' requests, with an internal context.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import TYPE_CHECKING, Any

from ..apiserver import clock
from ..apiserver.errors import ApiError
from ..apiserver.patch import MERGE_PATCH
from ..apiserver.resources import ResourceType
from ..apiserver.service import ApiService, Context
from ..apiserver.store import Event

if TYPE_CHECKING:
    from ..apiserver.server import LabServer

log = logging.getLogger(__name__)


class Controller:
    name = "controller"
    watches: tuple[tuple[str, str], ...] = ()

    def __init__(self, server: LabServer) -> None:
        self.server = server
        self.api: ApiService = server.service
        self.settings = server.settings
        self.ctx = Context(user=f"system:serviceaccount:gpu-lab:{self.name}",
                           field_manager=self.name, internal=True)
        self.dirty = True
        self.due: float | None = None
        self._event_keys: set[tuple[str, str, str]] = set()

    # --- scheduling ----------------------------------------------------------------------
    def wants(self, event: Event) -> bool:
        return event.key in self.watches

    def reconcile(self) -> float | None:
        raise NotImplementedError

    def scaled(self, seconds: float) -> float:
        """A simulated delay in real seconds (``GPU_LAB_TIME_SCALE``)."""
        return max(0.0, float(seconds)) * self.settings.time_scale

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()

    # --- reads ---------------------------------------------------------------------------
    def rt(self, group: str, plural: str) -> ResourceType | None:
        return self.api.registry.storage(group, plural)

    def list(self, group: str, plural: str, namespace: str | None = None) -> list[dict]:
        rt = self.rt(group, plural)
        if rt is None:
            return []
        return [copy.deepcopy(o) for o in self.api.store.list(rt.key, namespace)]

    def get(self, group: str, plural: str, namespace: str | None, name: str) -> dict | None:
        rt = self.rt(group, plural)
        if rt is None:
            return None
        found = self.api.store.get(rt.key, namespace if rt.namespaced else "", name)
        return copy.deepcopy(found) if found is not None else None

    # --- writes --------------------------------------------------------------------------
    def create(self, group: str, plural: str, body: dict[str, Any]) -> dict | None:
        rt = self.rt(group, plural)
        if rt is None:
            return None
        body.setdefault("apiVersion", rt.api_version)
        body.setdefault("kind", rt.kind)
        try:
            return self.api.create(rt, body["metadata"].get("namespace"), body, self.ctx)
        except ApiError as exc:
            if exc.reason != "AlreadyExists":  # recorded as an event on the owner
                log.debug("%s: create %s/%s failed: %s", self.name, plural,
                          body["metadata"].get("name"), exc.message)
                self._report_to_owner(body, exc)
            return None

    def _report_to_owner(self, body: dict[str, Any], exc: ApiError) -> None:
        """A refused create shows up as a FailedCreate event on the owner, as in k8s."""
        for ref in body["metadata"].get("ownerReferences") or []:
            rt = self.api.registry.by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
            owner = self.api.store.get(rt.key, body["metadata"].get("namespace", "") if
                                       rt.namespaced else "", ref.get("name", "")) if rt else None
            if owner is not None:
                self.event(owner, "FailedCreate", f"Error creating: {exc.message}", "Warning")

    def patch(self, group: str, plural: str, namespace: str | None, name: str,
              patch: dict[str, Any], subresource: str | None = None) -> dict | None:
        rt = self.rt(group, plural)
        if rt is None:
            return None
        try:
            return self.api.patch(rt, namespace, name, MERGE_PATCH, patch, self.ctx, subresource)
        except ApiError as exc:
            if exc.code != 404:
                log.warning("%s: patch %s/%s failed: %s", self.name, plural, name, exc.message)
            return None

    def set_status(self, group: str, plural: str, obj: dict[str, Any],
                   status: dict[str, Any]) -> dict | None:
        """Replace the status of ``obj`` (only when it differs)."""
        if obj.get("status") == status:
            return obj
        rt = self.rt(group, plural)
        if rt is None:
            return None
        meta = obj["metadata"]
        current = self.get(group, plural, meta.get("namespace"), meta["name"])
        if current is None:
            return None
        current["status"] = status
        sub = "status" if rt.has_status else None
        try:
            return self.api.update(rt, meta.get("namespace"), meta["name"], current, self.ctx,
                                   sub)
        except ApiError as exc:
            log.warning("%s: status of %s/%s refused: %s", self.name, plural, meta["name"],
                        exc.message)
            return None

    def delete(self, group: str, plural: str, namespace: str | None, name: str,
               grace: int | None = None) -> None:
        rt = self.rt(group, plural)
        if rt is None:
            return
        options = {"gracePeriodSeconds": grace} if grace is not None else {}
        try:
            self.api.delete(rt, namespace, name, self.ctx, options)
        except ApiError as exc:
            if exc.code != 404:
                log.warning("%s: delete %s/%s failed: %s", self.name, plural, name, exc.message)

    def event(self, obj: dict[str, Any], reason: str, message: str,
              kind: str = "Normal") -> None:
        """Record a core/v1 Event once per (object, reason, message)."""
        meta = obj["metadata"]
        ident = (meta.get("uid", ""), reason, message)
        if ident in self._event_keys:
            return
        self._event_keys.add(ident)
        namespace = meta.get("namespace") or "default"
        now = clock.now()
        self.create("", "events", {
            "metadata": {"name": f"{meta['name']}.{clock.random_suffix(8)}",
                         "namespace": namespace},
            "involvedObject": {"kind": obj.get("kind"), "apiVersion": obj.get("apiVersion"),
                               "name": meta["name"], "namespace": meta.get("namespace"),
                               "uid": meta.get("uid")},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": self.name}, "reportingComponent": self.name,
            "reportingInstance": self.name,
        })


def owner_ref(obj: dict[str, Any], controller: bool = True) -> dict[str, Any]:
    meta = obj["metadata"]
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
            "uid": meta["uid"], "controller": controller, "blockOwnerDeletion": True}


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    uid = owner["metadata"]["uid"]
    return any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])


def condition(ctype: str, status: bool | str, reason: str = "", message: str = "",
              previous: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A condition whose lastTransitionTime only moves when its status changes."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    old = next((c for c in previous or [] if c.get("type") == ctype), None)
    when = old["lastTransitionTime"] if old and old.get("status") == value and old.get(
        "lastTransitionTime") else clock.now()
    out = {"type": ctype, "status": value, "lastTransitionTime": when}
    if reason:
        out["reason"] = reason
    out["message"] = message
    return out
