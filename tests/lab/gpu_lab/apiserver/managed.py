"""Field ownership: ``managedFields`` for updates and server-side apply.

Updates (create, PUT, non-apply PATCH) give their manager the fields they changed and take
those fields from everyone else. An apply owns exactly the fields of its configuration:
setting a field that another manager owns to a different value is a conflict (409) unless
forced; fields the applier owned before and no longer sets are removed from the object
when nobody else owns them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError
from .fieldset import (
    Path,
    from_tree,
    get_path,
    item_key,
    object_fields,
    prune_missing,
    remove_path,
    set_key,
    to_tree,
)
from .schema import Schema


@dataclass
class Entry:
    manager: str
    operation: str
    api_version: str
    subresource: str = ""
    time: str = ""
    fields: set[Path] = field(default_factory=set)

    def same_actor(self, manager: str, operation: str, subresource: str) -> bool:
        return (self.manager, self.operation, self.subresource) == (
            manager,
            operation,
            subresource,
        )


def load(obj: dict[str, Any]) -> list[Entry]:
    entries = []
    for raw in obj.get("metadata", {}).get("managedFields") or []:
        if not raw.get("manager") and not raw.get("fieldsV1"):
            continue
        entries.append(
            Entry(
                manager=raw.get("manager", ""),
                operation=raw.get("operation", "Update"),
                api_version=raw.get("apiVersion", ""),
                subresource=raw.get("subresource", ""),
                time=raw.get("time", ""),
                fields=from_tree(raw.get("fieldsV1") or {}),
            )
        )
    return entries


def dump(entries: list[Entry]) -> list[dict[str, Any]]:
    out = []
    for e in entries:
        if not e.fields:
            continue
        raw: dict[str, Any] = {
            "manager": e.manager,
            "operation": e.operation,
            "apiVersion": e.api_version,
            "time": e.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_tree(e.fields),
        }
        if e.subresource:
            raw["subresource"] = e.subresource
        out.append(raw)
    return out


def _entry(entries: list[Entry], manager: str, op: str, sub: str, api_version: str) -> Entry:
    for e in entries:
        if e.same_actor(manager, op, sub):
            e.api_version = api_version
            return e
    e = Entry(manager, op, api_version, sub)
    entries.append(e)
    return e


def section_of(subresource: str, has_status: bool) -> str:
    if subresource == "status":
        return "status"
    return "main" if has_status else "all"


def record_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    schema: Schema,
    manager: str,
    api_version: str,
    section: str,
    now: str,
) -> None:
    """Set ``new``'s managedFields after an update by ``manager``."""
    entries = load(old) if old else []
    old_fields = object_fields(old, schema, section) if old else set()
    new_fields = object_fields(new, schema, section)
    changed = {
        p
        for p in new_fields
        if p not in old_fields
        or (not p[-1].startswith(("k:", "v:")) and get_path(old, p)[1] != get_path(new, p)[1])
    }
    for e in entries:
        e.fields -= changed
        e.fields = prune_missing(e.fields, new)
    sub = "status" if section == "status" else ""
    if changed:
        mine = _entry(entries, manager, "Update", sub, api_version)
        mine.fields |= changed
        mine.time = now
    new.setdefault("metadata", {})["managedFields"] = dump(entries)


def apply_config(
    live: dict[str, Any] | None,
    config: dict[str, Any],
    schema: Schema,
    manager: str,
    force: bool,
    section: str,
    now: str,
) -> dict[str, Any]:
    """Merge an apply configuration into ``live``; raise a 409 on conflicts unless forced."""
    api_version = config.get("apiVersion", "")
    base = copy.deepcopy(live) if live else {}
    entries = load(base)
    sub = "status" if section == "status" else ""
    config_fields = object_fields(config, schema, section)
    mine = _entry(entries, manager, "Apply", sub, api_version)
    previous = set(mine.fields)
    others = [e for e in entries if e is not mine]
    conflicts = _conflicts(base, config, config_fields, others)
    if conflicts and not force:
        raise _conflict_error(conflicts)
    for e, path in conflicts:
        e.fields.discard(path)
    merged = merge(base, config, schema)
    owned_by_others = set().union(*(e.fields for e in others)) if others else set()
    # shallowest first: a list item the manager stopped setting goes whole (its key
    # fields with it); removing its fields first would leave an item no key finds
    for path in sorted(previous - config_fields, key=len):
        if not any(p[: len(path)] == path for p in owned_by_others):
            remove_path(merged, path)
    for e in others:
        e.fields = prune_missing(e.fields, merged)
    if mine.fields != config_fields or not mine.time:
        mine.time = now
    mine.fields = config_fields
    merged.setdefault("metadata", {})["managedFields"] = dump(entries)
    return merged


def _conflicts(
    live: dict[str, Any], config: dict[str, Any], paths: set[Path], others: list[Entry]
) -> list[tuple[Entry, Path]]:
    found = []
    for path in sorted(paths):
        if path[-1].startswith(("k:", "v:")):
            continue
        present, live_value = get_path(live, path)
        if not present or live_value == get_path(config, path)[1]:
            continue
        found.extend((e, path) for e in others if path in e.fields)
    return found


def path_string(path: Path) -> str:
    """A path as structured-merge-diff prints it: ``.spec.containers[name="x"].image``."""
    out = []
    for element in path:
        kind, body = element[:1], element[2:]
        if kind == "f":
            out.append("." + body)
        elif kind == "k":
            keys = json.loads(body)
            out.append("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]")
        elif kind == "v":
            out.append(f"[={body}]")
        else:
            out.append(f"[{body}]")
    return "".join(out)


def _conflict_error(conflicts: list[tuple[Entry, Path]]) -> ApiError:
    count = len(conflicts)
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f'conflict with "{e.manager}" using {e.api_version}',
            "field": path_string(p),
        }
        for e, p in conflicts
    ]
    if count == 1:
        e, p = conflicts[0]
        text = f'conflict with "{e.manager}" using {e.api_version}: {path_string(p)}'
    else:
        lines = []
        by_manager: dict[str, list[str]] = {}
        for e, p in conflicts:
            by_manager.setdefault(f'"{e.manager}" using {e.api_version}', []).append(
                path_string(p)
            )
        for who, paths in sorted(by_manager.items()):
            lines.append(f"conflicts with {who}:")
            lines.extend(f"- {p}" for p in paths)
        text = "\n".join(lines)
    plural = "conflict" if count == 1 else "conflicts"
    return ApiError(
        409, "Conflict", f"Apply failed with {count} {plural}: {text}", {"causes": causes}
    )


def merge(live: Any, config: Any, schema: Schema) -> Any:
    """Merge an apply configuration into a live value following the schema's list types."""
    if isinstance(config, dict) and isinstance(live, dict) and not schema.atomic_map:
        out = dict(live)
        for key, value in config.items():
            child = schema.child(key) or Schema.any()
            out[key] = merge(live[key], value, child) if key in live else copy.deepcopy(value)
        return out
    if isinstance(config, list) and isinstance(live, list) and not schema.is_any:
        if schema.list_type == "map" and all(isinstance(i, dict) for i in config + live):
            keys = schema.map_keys
            out = list(live)
            index = {item_key(item, keys): i for i, item in enumerate(out)}
            for item in config:
                k = item_key(item, keys)
                if k in index:
                    out[index[k]] = merge(out[index[k]], item, schema.items)
                else:
                    index[k] = len(out)
                    out.append(copy.deepcopy(item))
            return out
        if schema.list_type == "set":
            out = list(live)
            present = {set_key(i) for i in out}
            out.extend(copy.deepcopy(i) for i in config if set_key(i) not in present)
            return out
    return copy.deepcopy(config)
