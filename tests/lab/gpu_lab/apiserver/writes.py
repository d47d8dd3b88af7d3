"""Helpers of the write path: apply-time null checks, generation and no-op comparison,
finalization, list continue tokens."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from .errors import ApiError, FieldError, bad_request, forbidden, invalid, not_found
from .resources import ResourceType
from .store import Store


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


def check_body(rt: ResourceType, body: Any, namespace: str | None, name: str | None,
               require_type: bool = False) -> None:
    if not isinstance(body, dict):
        raise bad_request(f"the body of the request could not be decoded as a {rt.kind}")
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if require_type and (not api_version or not kind):
        raise bad_request("Object 'Kind' is missing in the apply configuration" if not kind
                          else "Object 'apiVersion' is missing in the apply configuration")
    if api_version and api_version != rt.api_version:
        raise bad_request(f"the API version in the data ({api_version}) does not match the "
                          f"expected API version ({rt.api_version})")
    if kind and kind != rt.kind:
        raise bad_request(f"the kind in the data ({kind}) does not match the expected kind "
                          f"({rt.kind})")
    meta = body.get("metadata") or {}
    body_ns = meta.get("namespace")
    if rt.namespaced and body_ns and namespace and body_ns != namespace:
        raise bad_request("the namespace of the provided object does not match the "
                          "namespace sent on the request")
    if name is not None and meta.get("name") and meta["name"] != name:
        raise bad_request(f"the name of the object ({meta['name']}) does not match the "
                          f"name on the URL ({name})")


def check_namespace(store: Store, namespace: str, internal: bool) -> None:
    ns = store.get(("", "namespaces"), "", namespace)
    if ns is None:
        raise not_found("namespaces", "", namespace)
    if ns["metadata"].get("deletionTimestamp") and not internal:
        raise forbidden(f"unable to create new content in namespace {namespace} because it "
                        "is being terminated", "namespaces", "", namespace)


def report_unknown_fields(unknown: list[str], field_validation: str, warnings: list[str]) -> None:
    if not unknown:
        return
    messages = [f'unknown field "{p}"' for p in unknown]
    if field_validation == "Strict":
        raise bad_request("strict decoding error: " + ", ".join(messages))
    if field_validation != "Ignore":
        warnings.extend(messages)


def invalid_error(rt: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    type_errors = [e for e in errors if e.kind == "TypeInvalid"]
    if rt.builtin and type_errors:
        e = type_errors[0]
        return bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: json: '
            f"cannot unmarshal {e.value} into Go struct field {rt.kind}.{e.path} of type "
            f"{e.detail.rsplit(' of type ', 1)[-1].split(':')[0]}")
    return invalid(rt.kind, rt.group, name, errors)


def needs_graceful_delete(rt: ResourceType, obj: dict, grace: Any) -> bool:
    meta = obj["metadata"]
    if meta.get("finalizers") or rt.plural == "namespaces":
        return True
    if rt.plural == "pods" and grace != 0 and not meta.get("deletionTimestamp"):
        return bool((obj.get("spec") or {}).get("nodeName")) and (
            obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    return False


def orphan_dependents(store: Store, uid: str) -> None:
    for key in store.resource_keys():
        for obj in store.list(key):
            refs = obj["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs):
                updated = copy.deepcopy(obj)
                updated["metadata"]["ownerReferences"] = [
                    r for r in refs if r.get("uid") != uid]
                store.put(key, updated)
