"""Built-in admission: per-kind defaults and validation the real API server applies.

Custom resources get their defaults and validation from their CRD schema; built-ins get
them here (the kube-apiserver's Go types, defaulters, strategies and admission plugins,
reduced to what the lab's clients can observe).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable
from typing import Any

from . import podspec
from .crds import crd_errors
from .errors import FieldError
from .resources import ResourceType
from .store import Store

_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_QUALIFIED = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    f"used for validation is '{_SUBDOMAIN}')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    f"regex used for validation is '{_LABEL}')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    f"'my_value',  or '12345', regex used for validation is '{_LABEL_VALUE}')"
)
# Kinds whose names must be DNS labels rather than subdomains.
_LABEL_NAMED = {"namespaces", "services"}
_SERVICE_CIDR = ipaddress.ip_network("172.30.0.0/16")

# The handlers, registered explicitly by (group, plural) with the decorators below; only
# built-in kinds use them (a CRD of the same plural gets its CRD schema instead).
Defaulter = Callable[["Admission", dict[str, Any], dict[str, Any] | None], None]
Validator = Callable[["Admission", dict[str, Any], dict[str, Any] | None], list[FieldError]]
DEFAULTERS: dict[tuple[str, str], Defaulter] = {}
VALIDATORS: dict[tuple[str, str], Validator] = {}


def _registers(table: dict, group: str, plural: str) -> Callable:
    def register(handler: Callable) -> Callable:
        if (group, plural) in table:
            raise ValueError(f"two admission handlers for {plural}.{group}")
        table[(group, plural)] = handler
        return handler
    return register


def _defaults(group: str, plural: str) -> Callable:
    return _registers(DEFAULTERS, group, plural)


def _validates(group: str, plural: str) -> Callable:
    return _registers(VALIDATORS, group, plural)


class Admission:
    def __init__(self, store: Store, apps_domain: str) -> None:
        self.store = store
        self.apps_domain = apps_domain

    # --- defaults ----------------------------------------------------------------------
    def defaults(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        handler = DEFAULTERS.get(rt.key)
        if handler and rt.builtin:
            handler(self, obj, old)

    @_defaults("", "pods")
    def _default_pods(self, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        spec = obj.setdefault("spec", {})
        podspec.pod_spec_defaults(spec, in_pod=True)
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Pending")
        status.setdefault("qosClass", podspec.qos_class(spec))

    @_defaults("apps", "deployments")
    def _default_deployments(self, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            strategy.setdefault("type", "RollingUpdate")
            strategy.setdefault("rollingUpdate", {"maxUnavailable": "25%", "maxSurge": "25%"})
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        podspec.template_defaults(spec.get("template"))

    @_defaults("apps", "replicasets")
    def _default_replicasets(self, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        obj.setdefault("spec", {}).setdefault("replicas", 1)
        podspec.template_defaults(obj["spec"].get("template"))

    @_defaults("batch", "jobs")
    def _default_jobs(self, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        spec = obj.setdefault("spec", {})
        for key, value in (("parallelism", 1), ("completions", 1), ("backoffLimit", 6),
                           ("completionMode", "NonIndexed"), ("suspend", False),
                           ("podReplacementPolicy", "TerminatingOrFailed"),
                           ("manualSelector", None)):
            if value is not None:
                spec.setdefault(key, value)
        template = spec.setdefault("template", {})
        uid = obj["metadata"].get("uid") or (old or {}).get("metadata", {}).get("uid", "")
        name = obj["metadata"].get("name", "")
        if "selector" not in spec and uid:
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            labels = template.setdefault("metadata", {}).setdefault("labels", {})
            labels.update({"batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
                           "batch.kubernetes.io/job-name": name, "job-name": name})
        podspec.template_defaults(template)

    @_defaults("", "services")
    def _default_services(self, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        if old and "clusterIP" in (old.get("spec") or {}):
            spec.setdefault("clusterIP", old["spec"]["clusterIP"])
        if "clusterIP" not in spec:
            spec["clusterIP"] = self._free_service_ip()
        if spec["clusterIP"] != "None":
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
        obj.setdefault("status", {}).setdefault("loadBalancer", {})

    def _free_service_ip(self) -> str:
        used = {s.get("spec", {}).get("clusterIP") for s in self.store.list(("", "services"))}
        for host in _SERVICE_CIDR.hosts():
            if host.packed[-2:] >= b"\x00\x0a" and str(host) not in used:
                return str(host)
        raise RuntimeError("service CIDR exhausted")

    @_defaults("", "persistentvolumeclaims")
    def _default_persistentvolumeclaims(self, obj: dict, old: dict | None) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("volumeMode", "Filesystem")
        if "storageClassName" not in spec and old is None:
            for sc in self.store.list(("storage.k8s.io", "storageclasses")):
                annotations = sc["metadata"].get("annotations") or {}
                if annotations.get("storageclass.kubernetes.io/is-default-class") == "true":
                    spec["storageClassName"] = sc["metadata"]["name"]
        obj.setdefault("status", {}).setdefault("phase", "Pending")

    @_defaults("", "persistentvolumes")
    def _default_persistentvolumes(self, obj: dict, old: dict | None) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
        spec.setdefault("volumeMode", "Filesystem")
        obj.setdefault("status", {}).setdefault("phase", "Pending")

    @_defaults("", "namespaces")
    def _default_namespaces(self, obj: dict, old: dict | None) -> None:
        name = obj["metadata"].get("name", "")
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")

    @_defaults("", "secrets")
    def _default_secrets(self, obj: dict, old: dict | None) -> None:
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None) or {}
        data = obj.setdefault("data", {}) if string_data else obj.get("data")
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()

    @_defaults("storage.k8s.io", "storageclasses")
    def _default_storageclasses(self, obj: dict, old: dict | None) -> None:
        obj.setdefault("reclaimPolicy", "Delete")
        obj.setdefault("volumeBindingMode", "Immediate")

    @_defaults("apiextensions.k8s.io", "customresourcedefinitions")
    def _default_customresourcedefinitions(self, obj: dict, old: dict | None) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("conversion", {"strategy": "None"})
        names = spec.setdefault("names", {})
        if names.get("kind"):
            names.setdefault("singular", names["kind"].lower())
            names.setdefault("listKind", names["kind"] + "List")

    @_defaults("route.openshift.io", "routes")
    def _default_routes(self, obj: dict, old: dict | None) -> None:
        spec = obj.setdefault("spec", {})
        meta = obj["metadata"]
        if not spec.get("host"):
            previous = ((old or {}).get("spec") or {}).get("host")
            spec["host"] = previous or f"{meta['name']}-{meta.get('namespace')}.{self.apps_domain}"
        spec.setdefault("wildcardPolicy", "None")
        if isinstance(spec.get("to"), dict):
            spec["to"].setdefault("weight", 100)

    # --- validation --------------------------------------------------------------------
    def validate(self, rt: ResourceType, obj: dict, old: dict | None) -> list[FieldError]:
        errors = metadata_errors(rt, obj)
        handler = VALIDATORS.get(rt.key)
        if handler and rt.builtin:
            errors += handler(self, obj, old)
        return errors

    @_validates("", "pods")
    def _validate_pods(self, obj: dict, old: dict | None) -> list[FieldError]:
        return podspec.pod_update_errors(old, obj) if old else []

    @_validates("apps", "deployments")
    def _validate_deployments(self, obj: dict, old: dict | None) -> list[FieldError]:
        spec = obj.get("spec") or {}
        errors = []
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        if any(labels.get(k) != v for k, v in selector.items()):
            errors.append(FieldError("Invalid", "spec.template.metadata.labels", labels,
                                     "`selector` does not match template `labels`"))
        if old and (old.get("spec") or {}).get("selector") != spec.get("selector"):
            errors.append(FieldError("Invalid", "spec.selector", spec.get("selector"),
                                     "field is immutable"))
        return errors

    @_validates("batch", "jobs")
    def _validate_jobs(self, obj: dict, old: dict | None) -> list[FieldError]:
        spec = obj.get("spec") or {}
        policy = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy")
        errors = []
        if policy not in ("OnFailure", "Never"):
            errors.append(FieldError("NotSupported", "spec.template.spec.restartPolicy", policy,
                                     supported=["OnFailure", "Never"]))
        if old and (old.get("spec") or {}).get("template") != spec.get("template"):
            errors.append(FieldError("Invalid", "spec.template", spec.get("template"),
                                     "field is immutable"))
        return errors

    @_validates("", "persistentvolumeclaims")
    def _validate_persistentvolumeclaims(self, obj: dict, old: dict | None) -> list[FieldError]:
        if not old:
            return []
        old_spec = dict(old.get("spec") or {})
        new_spec = dict(obj.get("spec") or {})
        old_spec.pop("resources", None)
        new_spec.pop("resources", None)
        if not old_spec.get("volumeName"):  # binding sets it once
            new_spec.pop("volumeName", None)
        if old_spec == new_spec:
            return []
        return [FieldError("Forbidden", "spec", detail=(
            "spec is immutable after creation except resources.requests and "
            "volumeAttributesClassName for bound claims"))]

    @_validates("apiextensions.k8s.io", "customresourcedefinitions")
    def _validate_customresourcedefinitions(self, obj: dict, old: dict | None) -> list:
        return crd_errors(obj, old)


def metadata_errors(rt: ResourceType, obj: dict[str, Any]) -> list[FieldError]:
    meta = obj.get("metadata") or {}
    errors = []
    name = meta.get("name", "")
    pattern, message, limit = (
        (_LABEL, _LABEL_MSG, 63) if rt.plural in _LABEL_NAMED else (_SUBDOMAIN, _SUBDOMAIN_MSG, 253)
    )
    if not re.fullmatch(pattern, name) or len(name) > limit:
        errors.append(FieldError("Invalid", "metadata.name", name, message))
    for key, value in (meta.get("labels") or {}).items():
        if not _qualified_name(key):
            errors.append(FieldError("Invalid", "metadata.labels", key,
                                     "name part must consist of alphanumeric characters, '-', "
                                     "'_' or '.', and must start and end with an alphanumeric "
                                     "character"))
        if not isinstance(value, str) or not re.fullmatch(_LABEL_VALUE, value) or len(value) > 63:
            errors.append(FieldError("Invalid", "metadata.labels", value, _LABEL_VALUE_MSG))
    annotations = meta.get("annotations") or {}
    for key, value in annotations.items():
        if not isinstance(value, str):
            errors.append(FieldError("Invalid", f"metadata.annotations[{key}]", value,
                                     "must be a string"))
    size = sum(len(k) + len(str(v)) for k, v in annotations.items())
    if size > 262144:  # why client-side apply of the big CRDs fails on a real server
        errors.append(FieldError("TooLong", "metadata.annotations", "",
                                 "may not be more than 262144 bytes"))
    return errors


def _qualified_name(key: str) -> bool:
    prefix, _sep, name = key.rpartition("/")
    if prefix and not re.fullmatch(_SUBDOMAIN, prefix):
        return False
    return bool(re.fullmatch(_QUALIFIED, name)) and len(name) <= 63
