"""Field sets for ``managedFields``: paths in the ``FieldsV1`` encoding.

A path is a tuple of elements as FieldsV1 spells them: ``f:<field>`` for an object field,
``k:{"name":"x"}`` for an item of an associative list, ``v:<json>`` for an item of a set
and ``i:<n>`` never (atomic lists are owned whole). A set holds the leaves and the list
items an actor owns; the nested-dict encoding marks an owned inner node with ``"."``.
"""

from __future__ import annotations

import json
from typing import Any

from .schema import Schema

Path = tuple[str, ...]

# Metadata the server owns or that identifies the object: never part of a field set.
_SERVER_META = frozenset(
    [
        "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
        "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink",
    ]
)


def item_key(item: dict[str, Any], keys: list[str]) -> str:
    picked = {k: item[k] for k in sorted(keys) if k in item}
    return "k:" + json.dumps(picked, separators=(",", ":"), sort_keys=True)


def set_key(item: Any) -> str:
    return "v:" + json.dumps(item, separators=(",", ":"), sort_keys=True)


def object_fields(obj: dict[str, Any], schema: Schema, section: str) -> set[Path]:
    """The field set of an object: ``main`` (no status), ``status`` or ``all``."""
    paths: set[Path] = set()
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if key == "status" and section == "main":
            continue
        if key != "status" and section == "status":
            continue
        child = schema.child(key) or Schema.any()
        if key == "metadata" and isinstance(value, dict):
            meta = {k: v for k, v in value.items() if k not in _SERVER_META}
            if meta:
                fields_of(meta, child, ("f:metadata",), paths)
            continue
        fields_of(value, child, ("f:" + key,), paths)
    return paths


def fields_of(value: Any, schema: Schema, prefix: Path, out: set[Path]) -> None:
    if isinstance(value, dict) and value and not schema.atomic_map:
        for key, item in value.items():
            child = schema.child(key) or Schema.any()
            fields_of(item, child, (*prefix, "f:" + key), out)
        return
    if isinstance(value, list) and value:
        list_type = schema.list_type if not schema.is_any else "atomic"
        if list_type == "map" and all(isinstance(i, dict) for i in value):
            keys = schema.map_keys
            for item in value:
                item_path = (*prefix, item_key(item, keys))
                out.add(item_path)
                fields_of(item, schema.items, item_path, out)
            return
        if list_type == "set":
            for item in value:
                out.add((*prefix, set_key(item)))
            return
    out.add(prefix)


def _find_item(items: list[Any], element: str) -> int | None:
    if element.startswith("k:"):
        wanted = json.loads(element[2:])
        for i, item in enumerate(items):
            if isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items()):
                return i
    elif element.startswith("v:"):
        wanted = json.loads(element[2:])
        for i, item in enumerate(items):
            if item == wanted:
                return i
    elif element.startswith("i:"):
        i = int(element[2:])
        return i if i < len(items) else None
    return None


def get_path(obj: Any, path: Path) -> tuple[bool, Any]:
    """(found, value) at ``path``."""
    node = obj
    for element in path:
        if element.startswith("f:"):
            if not isinstance(node, dict) or element[2:] not in node:
                return False, None
            node = node[element[2:]]
        else:
            if not isinstance(node, list):
                return False, None
            i = _find_item(node, element)
            if i is None:
                return False, None
            node = node[i]
    return True, node


def remove_path(obj: Any, path: Path) -> None:
    """Remove the field or list item at ``path`` if it exists."""
    found, parent = get_path(obj, path[:-1])
    if not found:
        return
    last = path[-1]
    if last.startswith("f:"):
        if isinstance(parent, dict):
            parent.pop(last[2:], None)
        return
    if isinstance(parent, list):
        i = _find_item(parent, last)
        if i is not None:
            del parent[i]


def to_tree(paths: set[Path]) -> dict[str, Any]:
    """Encode a set as FieldsV1 (nested dicts; ``"."`` marks an owned inner node)."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for element in path:
            node = node.setdefault(element, {})
    for path in paths:
        node = tree
        for element in path:
            node = node[element]
        if node and "." not in node:
            node["."] = {}
    return tree


def from_tree(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for key, child in tree.items():
        if key == ".":
            out.add(prefix)
            continue
        path = (*prefix, key)
        if child:
            out |= from_tree(child, path)
        else:
            out.add(path)
    return out


def prune_missing(paths: set[Path], obj: dict[str, Any]) -> set[Path]:
    """Drop paths whose field no longer exists in ``obj``."""
    return {p for p in paths if get_path(obj, p)[0]}
