"""Resource types and the registry the server routes and discovers with.

A ``ResourceType`` is one group/version/resource; the CRDs registered at run time add
one per served version. Objects are stored once per ``key`` (group, plural) in the
storage version and converted (apiVersion rewritten) when read in another version.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .schema import Schema

READ_VERBS = ("get", "list", "watch")
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(eq=False)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    schema_loader: Callable[[], Schema] = field(default=Schema.any, repr=False)
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ("status",)
    verbs: tuple[str, ...] = ALL_VERBS
    builtin: bool = True
    storage_version: str = ""
    # Read-only computed resources (PackageManifest): an object with get(ns, name)/list(ns).
    virtual: Any = None
    _schema: Schema | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.singular:
            self.singular = self.kind.lower()
        if not self.storage_version:
            self.storage_version = self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage_api_version(self) -> str:
        return f"{self.group}/{self.storage_version}" if self.group else self.storage_version

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def schema(self) -> Schema:
        if self._schema is None:
            self._schema = self.schema_loader()
        return self._schema

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            prefix += f"/namespaces/{namespace}"
        prefix += f"/{self.plural}"
        return f"{prefix}/{name}" if name else prefix


class Registry:
    """All served resource types, by group/version/plural and by group/kind."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._group_order: list[str] = []

    def add(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt
        if rt.group not in self._group_order:
            self._group_order.append(rt.group)

    def remove(self, group: str, plural: str) -> None:
        for k in [k for k in self._types if k[0] == group and k[2] == plural]:
            del self._types[k]
        if not any(k[0] == group for k in self._types) and group in self._group_order:
            self._group_order.remove(group)

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def storage(self, group: str, plural: str) -> ResourceType | None:
        """The type in its storage version."""
        for (g, v, p), rt in self._types.items():
            if g == group and p == plural and v == rt.storage_version:
                return rt
        return None

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _sep, version = api_version.rpartition("/")
        for rt in self._types.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        return None

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def groups(self) -> list[tuple[str, list[str]]]:
        """Groups in registration order with versions by Kubernetes priority (preferred first)."""
        out = []
        for group in self._group_order:
            versions = sorted({key[1] for key in self._types if key[0] == group}, key=_version_rank)
            out.append((group, versions))
        return out

    def resources(self, group: str, version: str) -> list[ResourceType]:
        return [rt for key, rt in self._types.items() if key[:2] == (group, version)]


def _version_rank(version: str) -> tuple[int, int, int]:
    """Kubernetes version priority: GA > beta > alpha, higher numbers first."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0)
    major = int(m.group(1))
    stage = {"beta": 1, "alpha": 2}.get(m.group(2) or "", 0)
    minor = int(m.group(3) or 0)
    return (stage, -major, -minor)
