"""Object storage with a global resourceVersion, an event history for watches, and a
JSON snapshot on disk so a lab survives restarts.

Everything runs on the server's event loop thread: a write is atomic with respect to
other requests and controllers, and watchers get their events in resourceVersion order.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import expired

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (group, plural)


@dataclass
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: Key
    obj: dict[str, Any]
    old: dict[str, Any] | None = None

    @property
    def namespace(self) -> str:
        return self.obj.get("metadata", {}).get("namespace", "")


class Watcher:
    """One watch stream: a queue of events of one resource (and namespace)."""

    def __init__(self, key: Key, namespace: str | None) -> None:
        self.key = key
        self.namespace = namespace
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def wants(self, event: Event) -> bool:
        return event.key == self.key and (not self.namespace or event.namespace == self.namespace)


class Store:
    def __init__(self, path: Path | None = None, history: int = 20000) -> None:
        self.path = path
        self.rv = 1
        self._objects: dict[Key, dict[tuple[str, str], dict[str, Any]]] = {}
        self._events: collections.deque[Event] = collections.deque(maxlen=history)
        self._oldest = 1
        self._watchers: list[Watcher] = []
        self._listeners: list[Callable[[Event], None]] = []
        self.dirty = False

    # --- reads -------------------------------------------------------------------------
    def get(self, key: Key, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get(key, {}).get((namespace or "", name))

    def list(self, key: Key, namespace: str | None = None) -> list[dict[str, Any]]:
        items = self._objects.get(key, {})
        if namespace:
            found = [o for ident, o in items.items() if ident[0] == namespace]
        else:
            found = list(items.values())
        found.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return found

    def resource_keys(self) -> list[Key]:
        return list(self._objects)

    # --- writes ------------------------------------------------------------------------
    def put(self, key: Key, obj: dict[str, Any]) -> Event:
        """Store ``obj`` (a new dict the caller no longer mutates) under a new resourceVersion."""
        meta = obj["metadata"]
        ident = (meta.get("namespace", ""), meta["name"])
        bucket = self._objects.setdefault(key, {})
        old = bucket.get(ident)
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        bucket[ident] = obj
        return self._emit(Event(self.rv, "MODIFIED" if old else "ADDED", key, obj, old))

    def remove(self, key: Key, obj: dict[str, Any]) -> Event | None:
        meta = obj["metadata"]
        bucket = self._objects.get(key, {})
        old = bucket.pop((meta.get("namespace", ""), meta["name"]), None)
        if old is None:
            return None
        self.rv += 1
        gone = dict(old)
        gone["metadata"] = {**old["metadata"], "resourceVersion": str(self.rv)}
        return self._emit(Event(self.rv, "DELETED", key, gone, old))

    def drop_key(self, key: Key) -> list[Event]:
        """Remove every object of a resource (a deleted CRD's custom resources)."""
        return [e for o in list(self._objects.get(key, {}).values()) if (e := self.remove(key, o))]

    def _emit(self, event: Event) -> Event:
        self.dirty = True
        self._events.append(event)
        if len(self._events) == self._events.maxlen:
            self._oldest = self._events[0].rv
        for w in self._watchers:
            if w.wants(event):
                w.queue.put_nowait(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a broken controller must not break the API
                log.exception("store listener failed")
        return event

    # --- watches and listeners ---------------------------------------------------------
    def subscribe(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def watch(self, key: Key, namespace: str | None, since: int | None) -> tuple[Watcher, list]:
        """A watcher plus the past events after ``since`` it must replay first."""
        backlog: list[Event] = []
        if since is not None and since < self.rv:
            if since < self._oldest:
                raise expired(f"too old resource version: {since} ({self._oldest})")
            backlog = [e for e in self._events if e.rv > since]
        watcher = Watcher(key, namespace)
        backlog = [e for e in backlog if watcher.wants(e)]
        self._watchers.append(watcher)
        return watcher, backlog

    def unwatch(self, watcher: Watcher) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    def close_watchers(self) -> None:
        for w in self._watchers:
            w.queue.put_nowait(None)
        self._watchers.clear()

    # --- persistence -------------------------------------------------------------------
    def save(self) -> None:
        if self.path is None:
            return
        data = {
            "resourceVersion": self.rv,
            "objects": {
                f"{g}/{p}": list(bucket.values()) for (g, p), bucket in self._objects.items()
            },
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w") as fh:
            json.dump(data, fh, separators=(",", ":"))
        os.replace(tmp, self.path)
        self.dirty = False

    def load(self) -> bool:
        """Load a snapshot; True if one existed."""
        if self.path is None or not self.path.exists():
            return False
        with self.path.open() as fh:
            data = json.load(fh)
        self.rv = int(data["resourceVersion"])
        self._oldest = self.rv
        for k, items in data["objects"].items():
            group, _sep, plural = k.rpartition("/")
            bucket = self._objects.setdefault((group, plural), {})
            for obj in items:
                meta = obj["metadata"]
                bucket[(meta.get("namespace", ""), meta["name"])] = obj
        return True
