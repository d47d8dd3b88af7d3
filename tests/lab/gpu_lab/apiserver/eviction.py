"""``POST pods/{name}/eviction``: delete the pod unless a PodDisruptionBudget forbids it.

As kube-apiserver does: 201 with a Success Status and the pod deleted gracefully (the
Eviction's ``deleteOptions`` apply), or 429 ``TooManyRequests`` naming the budget when
evicting a healthy pod would leave fewer healthy pods than the budget asks. The
budget's arithmetic is done here from the pods themselves (the lab has no disruption
controller filling ``status.disruptionsAllowed``): expected = pods the selector
matches, healthy = those Ready and not being deleted; ``minAvailable`` /
``maxUnavailable`` as an integer or a percentage (rounded up, as upstream).
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ApiError, bad_request
from .selectors import match_expressions


def _ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _count(value: Any, expected: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * expected / 100)
    return int(value)


def _allowed(pdb: dict[str, Any], pods: list[dict[str, Any]]) -> int:
    spec = pdb.get("spec") or {}
    matched = [p for p in pods
               if match_expressions(spec.get("selector"), p["metadata"].get("labels") or {})]
    expected, healthy = len(matched), sum(1 for p in matched if _ready(p))
    if spec.get("maxUnavailable") is not None:
        desired = expected - _count(spec["maxUnavailable"], expected)
    else:
        desired = _count(spec.get("minAvailable", 0), expected)
    return healthy - max(desired, 0)


def evict(service, namespace: str, name: str, body: Any, ctx) -> dict[str, Any]:
    """Evict one pod; return the Status of a 201, or raise the API's error."""
    if not isinstance(body, dict) or body.get("kind") not in (None, "Eviction"):
        raise bad_request("the body of an eviction must be an Eviction")
    pods_rt = service.rt("", "pods")
    pod = service.get(pods_rt, namespace, name)  # 404 when it is gone
    if _ready(pod):
        pods = service.items(pods_rt, namespace)
        for pdb in service.items(service.rt("policy", "poddisruptionbudgets"), namespace):
            selector = (pdb.get("spec") or {}).get("selector")
            if not match_expressions(selector, pod["metadata"].get("labels") or {}):
                continue
            if _allowed(pdb, pods) < 1:
                raise ApiError(
                    429, "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    {"causes": [{"reason": "DisruptionBudget",
                                 "message": f"The disruption budget {pdb['metadata']['name']} "
                                            "needs more healthy pods to run"}],
                     "retryAfterSeconds": 10},
                    {"Retry-After": "10"})
    service.delete(pods_rt, namespace, name, ctx, body.get("deleteOptions") or {})
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "code": 201}
