"""The built-in kinds the lab serves, with schemas from ``kubernetes-validate``.

``kubernetes-validate`` ships the OpenAPI definitions of each Kubernetes release as JSON
schemas, including ``x-kubernetes-list-type``, map keys and patch strategies: enough for
pruning, strict field validation, strategic merge and server-side apply of built-ins.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from .resources import Registry, ResourceType
from .schema import Schema

log = logging.getLogger(__name__)

# kind, group, version, plural, namespaced, definition, short names, subresources
_CORE = "io.k8s.api.core.v1."
_BUILTINS: list[tuple[str, str, str, str, bool, str, tuple[str, ...], tuple[str, ...]]] = [
    ("Namespace", "", "v1", "namespaces", False, _CORE + "Namespace", ("ns",),
     ("status", "finalize")),
    ("Node", "", "v1", "nodes", False, _CORE + "Node", ("no",), ("status",)),
    ("Pod", "", "v1", "pods", True, _CORE + "Pod", ("po",),
     ("status", "log", "exec", "binding", "eviction")),
    ("Service", "", "v1", "services", True, _CORE + "Service", ("svc",), ("status",)),
    ("Endpoints", "", "v1", "endpoints", True, _CORE + "Endpoints", ("ep",), ()),
    ("Secret", "", "v1", "secrets", True, _CORE + "Secret", (), ()),
    ("ConfigMap", "", "v1", "configmaps", True, _CORE + "ConfigMap", ("cm",), ()),
    ("ServiceAccount", "", "v1", "serviceaccounts", True, _CORE + "ServiceAccount", ("sa",), ()),
    ("PersistentVolumeClaim", "", "v1", "persistentvolumeclaims", True,
     _CORE + "PersistentVolumeClaim", ("pvc",), ("status",)),
    ("PersistentVolume", "", "v1", "persistentvolumes", False, _CORE + "PersistentVolume",
     ("pv",), ("status",)),
    ("Event", "", "v1", "events", True, _CORE + "Event", ("ev",), ()),
    ("ResourceQuota", "", "v1", "resourcequotas", True, _CORE + "ResourceQuota", ("quota",),
     ("status",)),
    ("LimitRange", "", "v1", "limitranges", True, _CORE + "LimitRange", ("limits",), ()),
    ("Deployment", "apps", "v1", "deployments", True, "io.k8s.api.apps.v1.Deployment",
     ("deploy",), ("status", "scale")),
    ("ReplicaSet", "apps", "v1", "replicasets", True, "io.k8s.api.apps.v1.ReplicaSet",
     ("rs",), ("status", "scale")),
    ("StatefulSet", "apps", "v1", "statefulsets", True, "io.k8s.api.apps.v1.StatefulSet",
     ("sts",), ("status", "scale")),
    ("DaemonSet", "apps", "v1", "daemonsets", True, "io.k8s.api.apps.v1.DaemonSet",
     ("ds",), ("status",)),
    ("Job", "batch", "v1", "jobs", True, "io.k8s.api.batch.v1.Job", (), ("status",)),
    ("CronJob", "batch", "v1", "cronjobs", True, "io.k8s.api.batch.v1.CronJob", ("cj",),
     ("status",)),
    ("StorageClass", "storage.k8s.io", "v1", "storageclasses", False,
     "io.k8s.api.storage.v1.StorageClass", ("sc",), ()),
    ("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies", True,
     "io.k8s.api.networking.v1.NetworkPolicy", ("netpol",), ()),
    ("Ingress", "networking.k8s.io", "v1", "ingresses", True,
     "io.k8s.api.networking.v1.Ingress", ("ing",), ("status",)),
    ("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets", True,
     "io.k8s.api.policy.v1.PodDisruptionBudget", ("pdb",), ("status",)),
    ("Role", "rbac.authorization.k8s.io", "v1", "roles", True,
     "io.k8s.api.rbac.v1.Role", (), ()),
    ("RoleBinding", "rbac.authorization.k8s.io", "v1", "rolebindings", True,
     "io.k8s.api.rbac.v1.RoleBinding", (), ()),
    ("ClusterRole", "rbac.authorization.k8s.io", "v1", "clusterroles", False,
     "io.k8s.api.rbac.v1.ClusterRole", (), ()),
    ("ClusterRoleBinding", "rbac.authorization.k8s.io", "v1", "clusterrolebindings", False,
     "io.k8s.api.rbac.v1.ClusterRoleBinding", (), ()),
    ("CustomResourceDefinition", "apiextensions.k8s.io", "v1", "customresourcedefinitions",
     False, "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
     ("crd", "crds"), ("status",)),
    ("Lease", "coordination.k8s.io", "v1", "leases", True,
     "io.k8s.api.coordination.v1.Lease", (), ()),
    ("PriorityClass", "scheduling.k8s.io", "v1", "priorityclasses", False,
     "io.k8s.api.scheduling.v1.PriorityClass", ("pc",), ()),
]

# Resources listed by ``kubectl get all``.
_CATEGORIES = {"pods": ("all",), "services": ("all",), "deployments": ("all",),
               "replicasets": ("all",), "statefulsets": ("all",), "daemonsets": ("all",),
               "jobs": ("all",), "cronjobs": ("all",)}


def _schema_dir(kube_minor: int) -> Path:
    import kubernetes_validate

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    available = sorted(
        (int(p.name.split(".")[1]), p) for p in base.glob("v1.*.0-local") if p.is_dir()
    )
    if not available:
        raise RuntimeError("kubernetes-validate ships no schemas")
    for minor, path in available:
        if minor == kube_minor:
            return path
    best = [p for m, p in available if m <= kube_minor] or [available[0][1]]
    return best[-1]


@functools.lru_cache(maxsize=4)
def definitions(kube_minor: int) -> dict[str, Any]:
    """All built-in definitions of one Kubernetes minor release (JSON schema ``$defs``)."""
    path = _schema_dir(kube_minor) / "_definitions.json"
    with path.open() as fh:
        return json.load(fh)["$defs"]


def builtin_schema(kube_minor: int, name: str) -> Schema:
    defs = definitions(kube_minor)
    if name not in defs:
        log.warning("no schema for %s in kubernetes-validate; accepting anything", name)
        return Schema.any()
    return Schema({"$ref": f"#/$defs/{name}"}, defs)


def object_meta_schema(kube_minor: int) -> Schema:
    return builtin_schema(kube_minor, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")


def register_builtins(registry: Registry, kube_minor: int) -> None:
    for kind, group, version, plural, namespaced, definition, short, subs in _BUILTINS:
        registry.add(
            ResourceType(
                group=group,
                version=version,
                kind=kind,
                plural=plural,
                namespaced=namespaced,
                schema_loader=functools.partial(builtin_schema, kube_minor, definition),
                short_names=short,
                categories=_CATEGORIES.get(plural, ()),
                subresources=subs,
            )
        )
