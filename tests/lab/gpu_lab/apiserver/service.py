"""The API's operations: get, list, create, update, patch, apply, delete.

The HTTP layer and the controllers both call these, so a controller's write goes through
the same decoding, defaulting, validation, ownership and resourceVersion rules as a
client's. Every write ends in ``_save``; a write that changes nothing stores nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from . import clock, managed
from .admission import Admission
from .cel import CelRules
from .crds import established_status, types_for_crd
from .errors import (
    ApiError,
    FieldError,
    already_exists,
    bad_request,
    conflict,
    invalid,
    not_found,
    stale,
    unsupported_media_type,
)
from .patch import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    json_patch,
    merge_patch,
    strategic_merge,
)
from .resources import Registry, ResourceType
from .scc import admit_pod
from .selectors import field_selector, label_selector
from .store import Event, Store
from .validation import apply_defaults, prune, validate
from .writes import (
    check_body,
    check_namespace,
    decode_continue,
    encode_continue,
    finalized,
    invalid_error,
    needs_graceful_delete,
    null_errors,
    orphan_dependents,
    report_unknown_fields,
    same,
    sort_key,
    spec_view,
)

_CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")


@dataclass
class Context:
    """Who writes and how: the request's options (dryRun, fieldManager, ...)."""

    user: str = "system:admin"
    field_manager: str = ""
    field_validation: str = "Warn"
    dry_run: bool = False
    force: bool = False
    internal: bool = False
    warnings: list[str] = field(default_factory=list)


def conflict_error(rt: ResourceType, name: str, why: str) -> ApiError:
    return conflict(rt.plural, rt.group, name, why)


class ApiService:
    def __init__(self, registry: Registry, store: Store, admission: Admission) -> None:
        self.registry = registry
        self.store = store
        self.admission = admission
        self.cel = CelRules()

    # --- helpers -----------------------------------------------------------------------
    def rt(self, group: str, plural: str) -> ResourceType:
        found = self.registry.storage(group, plural)
        if found is None:
            raise not_found(plural, group, "")
        return found

    def _out(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.api_version
        return out

    def _ns(self, rt: ResourceType, namespace: str | None) -> str:
        return (namespace or "") if rt.namespaced else ""

    def _existing(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.store.get(rt.key, self._ns(rt, namespace), name)
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        return obj

    # --- reads -------------------------------------------------------------------------
    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        if rt.virtual is not None:
            return rt.virtual.get(namespace, name)
        return self._out(rt, self._existing(rt, namespace, name))

    def items(self, rt: ResourceType, namespace: str | None, labels: str | None = None,
              fields: str | None = None) -> list[dict[str, Any]]:
        if rt.virtual is not None:
            found = rt.virtual.list(namespace)
        else:
            found = self.store.list(rt.key, self._ns(rt, namespace) or None)
        match_labels = label_selector(labels)
        match_fields = field_selector(fields, rt.plural, rt.builtin)
        return [o for o in found if match_labels(o) and match_fields(o)]

    def list(self, rt: ResourceType, namespace: str | None, labels: str | None = None,
             fields: str | None = None, limit: int | None = None,
             continue_token: str | None = None) -> dict[str, Any]:
        found = self.items(rt, namespace, labels, fields)
        meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if continue_token:
            start = decode_continue(continue_token)
            found = [o for o in found if sort_key(o) > start]
        if limit and len(found) > limit:
            meta["continue"] = encode_continue(sort_key(found[limit - 1]))
            meta["remainingItemCount"] = len(found) - limit
            found = found[:limit]
        items = []
        for obj in found:
            item = self._out(rt, obj)
            if rt.builtin:
                item.pop("apiVersion", None)
                item.pop("kind", None)
            items.append(item)
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta,
                "items": items}

    # --- writes ------------------------------------------------------------------------
    def create(self, rt: ResourceType, namespace: str | None, body: Any,
               ctx: Context, applied: bool = False) -> dict[str, Any]:
        check_body(rt, body, namespace, None)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            check_namespace(self.store, namespace or "", ctx.internal)
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + clock.random_suffix()
        if not meta.get("name"):
            raise invalid(rt.kind, rt.group, "", [FieldError(
                "Required", "metadata.name", detail="name or generateName is required")])
        if self.store.get(rt.key, self._ns(rt, namespace), meta["name"]) is not None:
            raise already_exists(rt.plural, rt.group, meta["name"])
        if meta.get("resourceVersion") and not applied:
            raise bad_request("resourceVersion should not be set on objects to be created")
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                    "selfLink"):
            meta.pop(key, None)
        if not applied:
            meta.pop("managedFields", None)
        meta["uid"] = clock.new_uid()
        meta["creationTimestamp"] = clock.now()
        meta["generation"] = 1
        if rt.has_status and not ctx.internal:
            obj.pop("status", None)
        return self._save(rt, None, obj, ctx, None, applied)

    def update(self, rt: ResourceType, namespace: str | None, name: str, body: Any,
               ctx: Context, subresource: str | None = None) -> dict[str, Any]:
        check_body(rt, body, namespace, name)
        old = self._existing(rt, namespace, name)
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise stale(rt.plural, rt.group, name)
        return self._save(rt, old, copy.deepcopy(body), ctx, subresource, False)

    def patch(self, rt: ResourceType, namespace: str | None, name: str, patch_type: str,
              body: Any, ctx: Context, subresource: str | None = None) -> dict[str, Any]:
        if patch_type == APPLY_PATCH:
            return self._apply(rt, namespace, name, body, ctx, subresource)
        old = self._existing(rt, namespace, name)
        current = self._out(rt, old)
        if patch_type == JSON_PATCH:
            new = json_patch(current, body)
        elif patch_type == MERGE_PATCH:
            new = merge_patch(current, body)
        elif patch_type == STRATEGIC_PATCH and rt.builtin:
            new = strategic_merge(current, body, rt.schema)
        else:
            raise unsupported_media_type(patch_type, [JSON_PATCH, MERGE_PATCH, APPLY_PATCH])
        if not isinstance(new, dict):
            raise bad_request("the patch did not produce an object")
        wanted = (new.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise stale(rt.plural, rt.group, name)
        return self._save(rt, old, new, ctx, subresource, False)

    def _apply(self, rt: ResourceType, namespace: str | None, name: str, config: Any,
               ctx: Context, subresource: str | None) -> dict[str, Any]:
        if not ctx.field_manager:
            raise bad_request("fieldManager is required for apply requests")
        check_body(rt, config, namespace, name, require_type=True)
        config = copy.deepcopy(config)
        if rt.namespaced:
            config.setdefault("metadata", {})["namespace"] = namespace
        nulls = null_errors(config, rt)
        if nulls:
            raise invalid_error(rt, name, nulls)
        unknown: list[str] = []
        prune(config, rt.schema, "", unknown, root=True)
        report_unknown_fields(unknown, ctx.field_validation, ctx.warnings)
        old = self.store.get(rt.key, self._ns(rt, namespace), name)
        wanted = config["metadata"].pop("resourceVersion", None)
        if wanted and (old is None or wanted != old["metadata"]["resourceVersion"]):
            raise stale(rt.plural, rt.group, name)
        section = managed.section_of(subresource or "", rt.has_status)
        live = self._out(rt, old) if old else None
        merged = managed.apply_config(live, config, rt.schema, ctx.field_manager, ctx.force,
                                      section, clock.now())
        if old is None:
            if subresource:
                raise not_found(rt.plural, rt.group, name)
            return self.create(rt, namespace, merged, ctx, applied=True)
        return self._save(rt, old, merged, ctx, subresource, True)

    def delete(self, rt: ResourceType, namespace: str | None, name: str, ctx: Context,
               options: dict[str, Any] | None = None) -> dict[str, Any]:
        options = options or {}
        obj = self._existing(rt, namespace, name)
        pre = options.get("preconditions") or {}
        meta = obj["metadata"]
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: "
                           f"{pre['uid']}, UID in object meta: {meta['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise stale(rt.plural, rt.group, name)
        if options.get("propagationPolicy") == "Orphan" and not ctx.dry_run:
            orphan_dependents(self.store, meta["uid"])
        grace = options.get("gracePeriodSeconds")
        if needs_graceful_delete(rt, obj, grace):
            if meta.get("deletionTimestamp"):
                return self._out(rt, obj)
            updated = copy.deepcopy(obj)
            updated["metadata"]["deletionTimestamp"] = clock.now()
            updated["metadata"]["deletionGracePeriodSeconds"] = int(
                grace if grace is not None else
                (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 0))
            if rt.plural == "namespaces":
                updated.setdefault("status", {})["phase"] = "Terminating"
            if ctx.dry_run:
                return self._out(rt, updated)
            self.store.put(rt.key, updated)
            return self._out(rt, updated)
        if not ctx.dry_run:
            self._remove(rt, obj)
        return self._out(rt, obj)

    def bind_pod(self, namespace: str, name: str, node: str, ctx: Context) -> dict[str, Any]:
        """The ``pods/binding`` subresource: set ``spec.nodeName`` once."""
        rt = self.rt("", "pods")
        old = self._existing(rt, namespace, name)
        if old["spec"].get("nodeName"):
            raise conflict_error(rt, name, f"pod {name} is already assigned to node "
                                 f'"{old["spec"]["nodeName"]}"')
        new = copy.deepcopy(old)
        new["spec"]["nodeName"] = node
        status = new.setdefault("status", {})
        others = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        status["conditions"] = [*others, {"type": "PodScheduled", "status": "True",
                                          "lastTransitionTime": clock.now()}]
        managed.record_update(old, new, rt.schema, ctx.field_manager or "unknown",
                              rt.api_version, "all", clock.now())
        if ctx.dry_run:
            return self._out(rt, new)
        self.store.put(rt.key, new)
        return self._out(rt, new)

    def delete_collection(self, rt: ResourceType, namespace: str | None, labels: str | None,
                          fields: str | None, ctx: Context) -> dict[str, Any]:
        doc = self.list(rt, namespace, labels, fields)
        for item in self.items(rt, namespace, labels, fields):
            self.delete(rt, item["metadata"].get("namespace"), item["metadata"]["name"], ctx)
        return doc

    # --- the write path ----------------------------------------------------------------
    def _save(self, rt: ResourceType, old: dict | None, new: dict, ctx: Context,
              subresource: str | None, applied: bool) -> dict[str, Any]:
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if old is not None:
            new = self._carry_over(rt, old, new, subresource)
            meta = new["metadata"]
        new["apiVersion"] = rt.storage_api_version
        new["kind"] = rt.kind
        unknown: list[str] = []
        prune(new, rt.schema, "", unknown, root=True)
        report_unknown_fields(unknown, ctx.field_validation, ctx.warnings)
        apply_defaults(new, rt.schema)
        self.admission.defaults(rt, new, old)
        if old is None and rt.builtin and rt.plural == "pods":
            admit_pod(self.store, new)  # service account and SCCs (403 when refused)
        errors: list[FieldError] = []
        # Built-in statuses are checked too: the typed kubernetes client refuses objects
        # that lack a field its OpenAPI marks as required.
        validate(new, rt.schema, "", errors)
        if not errors and not rt.schema.ref:  # CRD schemas: their CEL rules
            errors += self.cel.errors(new, old, rt.schema)
        errors += self.admission.validate(rt, new, old)
        if errors:
            raise invalid_error(rt, meta.get("name", ""), errors)
        if old is not None:
            if meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(
                    old["metadata"].get("finalizers") or [])
                if added:
                    raise invalid_error(rt, meta["name"], [FieldError(
                        "Forbidden", "metadata.finalizers", detail="no new finalizers can be "
                        "added if the object is being deleted")])
            if spec_view(new, rt) != spec_view(old, rt):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
        if not applied:
            section = managed.section_of(subresource or "", rt.has_status)
            manager = ctx.field_manager or "unknown"
            managed.record_update(old, new, rt.schema, manager, rt.api_version, section,
                                  clock.now())
        if old is not None and same(old, new):
            return self._out(rt, old)
        if ctx.dry_run:
            return self._out(rt, new)
        if old is not None and finalized(rt, new):
            self._remove(rt, new)
            return self._out(rt, new)
        event = self.store.put(rt.key, new)
        self._after_write(rt, event)
        return self._out(rt, new)

    def _carry_over(self, rt: ResourceType, old: dict, new: dict, sub: str | None) -> dict:
        """Server-owned metadata from the stored object; status/main split by subresource."""
        if sub == "status":
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status")
            if merged["status"] is None:
                merged.pop("status")
            if "managedFields" in new.get("metadata", {}):
                merged["metadata"]["managedFields"] = new["metadata"]["managedFields"]
            return merged
        if sub == "finalize" and rt.plural == "namespaces":
            merged = copy.deepcopy(old)
            merged["spec"] = new.get("spec") or {}
            return merged
        meta = new["metadata"]
        old_meta = old["metadata"]
        for key in ("uid", "creationTimestamp", "deletionTimestamp",
                    "deletionGracePeriodSeconds", "generation", "namespace"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta["name"] = old_meta["name"]
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if rt.has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        return new

    def _after_write(self, rt: ResourceType, event: Event) -> None:
        if rt.key != _CRD_KEY:
            return
        crd = event.obj
        for t in types_for_crd(crd):
            self.registry.add(t)
        conditions = (crd.get("status") or {}).get("conditions") or []
        if not any(c.get("type") == "Established" for c in conditions):
            updated = copy.deepcopy(crd)
            updated["status"] = established_status(crd)
            self.store.put(rt.key, updated)

    def _remove(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        self.store.remove(rt.key, obj)
        if rt.key == _CRD_KEY:
            spec = obj["spec"]
            self.store.drop_key((spec["group"], spec["names"]["plural"]))
            self.registry.remove(spec["group"], spec["names"]["plural"])
