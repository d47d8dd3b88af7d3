"""Fault injection for clients' retry tests: the next N matching requests fail.

A rule matches a verb (get, list, watch, create, update, patch, delete, or ``*``) and a
resource (``pods``, ``deployments.apps``, ``rayclusters.ray.io`` or ``*``), optionally a
namespace and a name, and answers with 409, 429, 500, 503 or 504 in the Status format the
real server uses for that code. ``skip`` lets that many matching requests through first
(the second write of one object: a PVC created, then its annotation updated).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ApiError, bad_request, internal, stale, too_many_requests

SUPPORTED_CODES = (409, 429, 500, 503, 504)
_ids = itertools.count(1)


@dataclass
class FaultRule:
    verb: str
    resource: str
    code: int
    count: int = 1
    namespace: str | None = None
    name: str | None = None
    retry_after: int = 1
    skip: int = 0
    id: int = 0

    def matches(self, verb: str, plural: str, group: str, namespace: str | None,
                name: str | None) -> bool:
        qualified = f"{plural}.{group}" if group else plural
        return (
            self.verb in ("*", verb)
            and self.resource in ("*", plural, qualified)
            and self.namespace in (None, namespace)
            and self.name in (None, name)
        )

    def error(self, plural: str, group: str, name: str | None) -> ApiError:
        if self.code == 409:
            return stale(plural, group, name or "")
        if self.code == 429:
            return too_many_requests("Too many requests, please try again later.",
                                     self.retry_after)
        if self.code == 503:
            return ApiError(503, "ServiceUnavailable", "the server is currently unable to "
                            "handle the request", {"retryAfterSeconds": self.retry_after},
                            {"Retry-After": str(self.retry_after)})
        if self.code == 504:
            return ApiError(504, "Timeout", "the server was unable to return a response in the "
                            "time allotted, but may still be processing the request")
        return internal("injected fault (gpu-lab)")


class Faults:
    def __init__(self) -> None:
        self.rules: list[FaultRule] = []

    def add(self, spec: dict[str, Any]) -> FaultRule:
        try:
            rule = FaultRule(
                verb=str(spec.get("verb", "*")),
                resource=str(spec.get("resource", "*")),
                code=int(spec["code"]),
                count=int(spec.get("count", 1)),
                namespace=spec.get("namespace"),
                name=spec.get("name"),
                retry_after=int(spec.get("retryAfter", 1)),
                skip=int(spec.get("skip", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise bad_request(f"invalid fault rule: {exc}") from exc
        if rule.code not in SUPPORTED_CODES:
            raise bad_request(f"fault code must be one of {SUPPORTED_CODES}")
        if rule.count < 1 or rule.skip < 0:
            raise bad_request("fault count must be at least 1 and skip not negative")
        rule.id = next(_ids)
        self.rules.append(rule)
        return rule

    def check(self, verb: str, plural: str, group: str, namespace: str | None,
              name: str | None) -> ApiError | None:
        for rule in self.rules:
            if rule.matches(verb, plural, group, namespace, name):
                if rule.skip > 0:  # let this one through; a later rule may still match
                    rule.skip -= 1
                    continue
                rule.count -= 1
                if rule.count <= 0:
                    self.rules.remove(rule)
                return rule.error(plural, group, name)
        return None

    def clear(self) -> None:
        self.rules.clear()

    def describe(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rules]
