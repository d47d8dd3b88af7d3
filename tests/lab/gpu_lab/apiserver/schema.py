"""Schema nodes over OpenAPI v3 (CRDs) and the JSON schemas of built-in kinds.

One wrapper serves validation, defaulting, pruning, strategic merge and server-side apply.
``$ref`` into a definitions table (``#/$defs/NAME``) is resolved lazily, and child nodes
are cached, so the 600 built-in definitions and KubeRay's large schemas cost little.
"""

from __future__ import annotations

from typing import Any

_TYPE_NAMES = ("string", "integer", "number", "boolean", "object", "array")


class Schema:
    """A node of a structural schema (or ``Schema.any()`` where anything goes)."""

    __slots__ = ("_defs", "_items", "_props", "raw", "ref")

    def __init__(self, raw: dict[str, Any], defs: dict[str, Any] | None = None) -> None:
        self._defs = defs
        self.ref = ""
        raw = self._deref(raw)
        self.raw = raw
        self._props: dict[str, Schema] | None = None
        self._items: Schema | None = None

    @classmethod
    def any(cls) -> Schema:
        return cls({"x-kubernetes-preserve-unknown-fields": True})

    def _deref(self, raw: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in raw and self._defs is not None and seen < 20:
            name = raw["$ref"].rsplit("/", 1)[-1]
            self.ref = name
            target = self._defs.get(name)
            if target is None:
                return {"x-kubernetes-preserve-unknown-fields": True}
            extra = {k: v for k, v in raw.items() if k not in ("$ref", "description")}
            raw = {**target, **extra} if extra else target
            seen += 1
        return raw

    def _node(self, raw: dict[str, Any]) -> Schema:
        return Schema(raw, self._defs)

    # --- shape -------------------------------------------------------------------------
    @property
    def types(self) -> set[str]:
        declared = self.raw.get("type")
        if isinstance(declared, str):
            found = {declared}
        elif isinstance(declared, list):
            found = {t for t in declared if t != "null"}
        else:
            found = set()
        for alt in self.raw.get("oneOf", ()):
            alt_type = alt.get("type")
            if isinstance(alt_type, list):
                found.update(t for t in alt_type if t != "null")
            elif isinstance(alt_type, str):
                found.add(alt_type)
        if self.int_or_string:
            found.update(("integer", "string"))
        return found

    @property
    def nullable(self) -> bool:
        declared = self.raw.get("type")
        return bool(self.raw.get("nullable")) or (
            isinstance(declared, list) and "null" in declared
        )

    @property
    def int_or_string(self) -> bool:
        return bool(self.raw.get("x-kubernetes-int-or-string"))

    @property
    def preserve_unknown(self) -> bool:
        return bool(self.raw.get("x-kubernetes-preserve-unknown-fields"))

    @property
    def quantity(self) -> bool:
        """A built-in ``resource.Quantity`` (served as a string whatever the client sent)."""
        return self.ref.endswith("api.resource.Quantity")

    @property
    def embedded_resource(self) -> bool:
        return bool(self.raw.get("x-kubernetes-embedded-resource"))

    @property
    def is_any(self) -> bool:
        """No type constraint at all (preserve-unknown or an empty schema)."""
        return not self.types and "properties" not in self.raw and "items" not in self.raw

    @property
    def properties(self) -> dict[str, Schema]:
        if self._props is None:
            self._props = {k: self._node(v) for k, v in self.raw.get("properties", {}).items()}
        return self._props

    @property
    def additional(self) -> Schema | None:
        extra = self.raw.get("additionalProperties")
        if isinstance(extra, dict):
            return self._node(extra)
        if extra is True:
            return Schema.any()
        return None

    @property
    def items(self) -> Schema:
        if self._items is None:
            raw = self.raw.get("items")
            self._items = self._node(raw) if isinstance(raw, dict) else Schema.any()
        return self._items

    def child(self, key: str) -> Schema | None:
        """The schema of ``key`` in an object, or None when the key is unknown here."""
        props = self.properties
        if key in props:
            return props[key]
        extra = self.additional
        if extra is not None:
            return extra
        if self.preserve_unknown or self.is_any:
            return Schema.any()
        return None

    # --- list and map semantics (server-side apply, strategic merge) --------------------
    @property
    def patch_strategy(self) -> list[str]:
        value = self.raw.get("x-kubernetes-patch-strategy", "")
        return [p for p in value.split(",") if p]

    @property
    def patch_merge_key(self) -> str | None:
        return self.raw.get("x-kubernetes-patch-merge-key")

    @property
    def list_type(self) -> str:
        declared = self.raw.get("x-kubernetes-list-type")
        if declared:
            return declared
        if "merge" in self.patch_strategy:
            return "map" if self.patch_merge_key else "set"
        return "atomic"

    @property
    def map_keys(self) -> list[str]:
        keys = self.raw.get("x-kubernetes-list-map-keys")
        if keys:
            return list(keys)
        key = self.patch_merge_key
        return [key] if key else []

    @property
    def atomic_map(self) -> bool:
        return self.raw.get("x-kubernetes-map-type") == "atomic"


def json_type(value: Any) -> str:
    """The JSON type name the real server reports for a value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def type_matches(value: Any, types: set[str]) -> bool:
    """Whether a value fits one of the declared types (``number`` takes integers too)."""
    actual = json_type(value)
    if actual in types:
        return True
    return actual == "integer" and "number" in types


def ordered_types(types: set[str]) -> str:
    return ",".join(t for t in _TYPE_NAMES if t in types)
