"""Helpers of the write path: apply-time null checks, generation and no-op comparison,
finalization, list continue tokens."""

from __future__ import annotations

import base64
import json
from typing import Any

from .errors import FieldError, bad_request
from .resources import ResourceType


def null_errors(config: dict[str, Any], rt: ResourceType) -> list[FieldError]:
    """Server-side apply refuses nulls where the schema wants an object or a list."""
    errors: list[FieldError] = []

    def walk(value: Any, schema: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                child = schema.child(key)
                sub = f"{path}.{key}" if path else key
                if item is None and child is not None and not child.nullable and (
                        child.types & {"object", "array"}):
                    want = "object" if "object" in child.types else "array"
                    errors.append(FieldError("TypeInvalid", sub, "null",
                                             f'{sub} in body must be of type {want}: "null"'))
                elif child is not None:
                    walk(item, child, sub)

    walk({k: v for k, v in config.items() if k != "metadata"}, rt.schema, "")
    return errors


def spec_view(obj: dict[str, Any], rt: ResourceType) -> dict[str, Any]:
    skip = {"metadata", "status", "apiVersion", "kind"} if rt.has_status else {
        "metadata", "apiVersion", "kind"}
    return {k: v for k, v in obj.items() if k not in skip}


def same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    a = dict(old, metadata={k: v for k, v in old["metadata"].items() if k != "resourceVersion"})
    b = dict(new, metadata={k: v for k, v in new["metadata"].items() if k != "resourceVersion"})
    return a == b


def finalized(rt: ResourceType, obj: dict[str, Any]) -> bool:
    meta = obj["metadata"]
    if not meta.get("deletionTimestamp") or meta.get("finalizers"):
        return False
    if rt.plural == "namespaces":
        return not (obj.get("spec") or {}).get("finalizers")
    return rt.plural != "pods"


def sort_key(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def encode_continue(start: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"start": start}).encode()).decode()


def decode_continue(token: str) -> str:
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))["start"]
    except (ValueError, KeyError) as exc:
        raise bad_request("continue key is not valid") from exc
