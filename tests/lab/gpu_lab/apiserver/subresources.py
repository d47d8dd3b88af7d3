"""Special endpoints: the ``scale`` subresource and the self-review APIs.

- ``.../deployments/{name}/scale`` (and replicasets, statefulsets): an ``autoscaling/v1``
  Scale whose ``spec.replicas`` writes through to the object (``kubernetes.core.k8s_scale``).
- ``authorization.k8s.io/v1`` SelfSubjectAccessReview and ``authentication.k8s.io/v1``
  SelfSubjectReview: what the caller's token may do, who it is (preflight checks).
"""

from __future__ import annotations

import copy
from typing import Any

from .auth import ADMIN, ANONYMOUS, READ_VERBS, User
from .errors import bad_request
from .patch import JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, json_patch, merge_patch
from .resources import Registry, ResourceType
from .service import ApiService, Context


def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    selector = (obj.get("spec") or {}).get("selector") or {}
    labels = ",".join(f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items())
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace"),
                     "uid": meta["uid"], "resourceVersion": meta["resourceVersion"],
                     "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                   "selector": labels},
    }


def write_scale(service: ApiService, rt: ResourceType, namespace: str | None, name: str,
                method: str, content_type: str, body: Any, ctx: Context) -> dict[str, Any]:
    current = scale_of(service.get(rt, namespace, name))
    if method == "PUT":
        wanted = body
    elif content_type == JSON_PATCH:
        wanted = json_patch(current, body)
    elif content_type in (MERGE_PATCH, STRATEGIC_PATCH):
        wanted = merge_patch(current, {k: v for k, v in (body or {}).items()
                                       if k not in ("kind", "apiVersion")})
    else:
        raise bad_request(f"unsupported patch type for scale: {content_type}")
    replicas = ((wanted or {}).get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise bad_request("spec.replicas must be a non-negative integer")
    updated = service.patch(rt, namespace, name, MERGE_PATCH, {"spec": {"replicas": replicas}},
                            ctx)
    return scale_of(updated)


class _SelfReviews:
    """Create-only reviews answered from the caller's identity."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def create(self, body: Any, user: User) -> dict[str, Any]:
        if self.kind == "SelfSubjectReview":
            return {"kind": self.kind, "apiVersion": "authentication.k8s.io/v1",
                    "metadata": {"creationTimestamp": None},
                    "status": {"userInfo": {"username": user.name, "groups": list(user.groups)}}}
        spec = copy.deepcopy((body or {}).get("spec") or {})
        attributes = spec.get("resourceAttributes") or {}
        verb = attributes.get("verb") or (spec.get("nonResourceAttributes") or {}).get("verb", "")
        allowed = user is ADMIN or (user is not ANONYMOUS and verb in READ_VERBS)
        status: dict[str, Any] = {"allowed": allowed, "reason": (
            "the lab's admin token may do anything" if user is ADMIN else
            "the lab's read-only token may get, list and watch" if allowed else
            f'User "{user.name}" cannot {verb} with the lab\'s read-only token')}
        return {"kind": self.kind, "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}


def register_reviews(registry: Registry) -> None:
    for group, kind, plural in (
            ("authorization.k8s.io", "SelfSubjectAccessReview", "selfsubjectaccessreviews"),
            ("authentication.k8s.io", "SelfSubjectReview", "selfsubjectreviews")):
        registry.add(ResourceType(group=group, version="v1", kind=kind, plural=plural,
                                  namespaced=False, subresources=(), verbs=("create",),
                                  virtual=_SelfReviews(kind)))
