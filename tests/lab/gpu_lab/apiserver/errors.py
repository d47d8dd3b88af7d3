"""API errors in the Kubernetes ``Status`` format, with the real server's reasons and messages.

Field errors follow ``k8s.io/apimachinery/pkg/util/validation/field``: each renders as
``<path>: <type>: <detail>`` and a 422 Invalid aggregates them the way the real server does
(``Kind.group "name" is invalid: <one>`` or ``... is invalid: [<a>, <b>]``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar


def go_repr(value: Any) -> str:
    """A value as the Go server prints it inside field errors (``%#v``-like)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if value is None:
        return "null"
    return json.dumps(json.dumps(value, sort_keys=True))


@dataclass
class FieldError:
    """One field error: ``kind`` is Invalid, Required, NotSupported, Forbidden, Duplicate..."""

    kind: str
    path: str
    value: Any = None
    detail: str = ""
    supported: list[Any] = field(default_factory=list)

    _REASONS: ClassVar[dict[str, str]] = {
        "Invalid": "FieldValueInvalid",
        "TypeInvalid": "FieldValueTypeInvalid",
        "Required": "FieldValueRequired",
        "NotSupported": "FieldValueNotSupported",
        "Forbidden": "FieldValueForbidden",
        "Duplicate": "FieldValueDuplicate",
        "TooLong": "FieldValueTooLong",
        "TooMany": "FieldValueTooMany",
    }

    def body(self) -> str:
        """The error without its path, as in ``Status.details.causes[].message``."""
        if self.kind in ("Invalid", "TypeInvalid"):
            return f"Invalid value: {go_repr(self.value)}: {self.detail}"
        if self.kind == "Required":
            return "Required value" + (f": {self.detail}" if self.detail else "")
        if self.kind == "NotSupported":
            values = ", ".join(json.dumps(v) for v in self.supported)
            return f"Unsupported value: {go_repr(self.value)}: supported values: {values}"
        if self.kind == "Forbidden":
            return f"Forbidden: {self.detail}"
        if self.kind == "Duplicate":
            return f"Duplicate value: {go_repr(self.value)}"
        if self.kind == "TooLong":
            return f"Too long: {self.detail}"
        if self.kind == "TooMany":
            return f"Too many: {self.detail}"
        return self.detail

    def message(self) -> str:
        return f"{self.path}: {self.body()}" if self.path else self.body()

    def cause(self) -> dict[str, str]:
        return {
            "reason": self._REASONS.get(self.kind, "FieldValueInvalid"),
            "message": self.body(),
            "field": self.path,
        }


class ApiError(Exception):
    """An error answered to the client as a ``Status`` object."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(name: str | None, group: str, kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = kind
    return details


def qualified(resource: str, group: str) -> str:
    """``pods`` for the core group, ``deployments.apps`` otherwise."""
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{qualified(resource, group)} "{name}" not found',
        _details(name, group, resource),
    )


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified(resource, group)} "{name}" already exists',
        _details(name, group, resource),
    )


def conflict(resource: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {why}',
        _details(name, group, resource),
    )


STALE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def stale(resource: str, group: str, name: str) -> ApiError:
    return conflict(resource, group, name, STALE)


def invalid(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    qkind = f"{kind}.{group}" if group else kind
    messages = [e.message() for e in errors]
    joined = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
    details = _details(name, group, kind)
    details["causes"] = [e.cause() for e in errors]
    return ApiError(422, "Invalid", f'{qkind} "{name}" is invalid: {joined}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def forbidden(message: str, resource: str = "", group: str = "", name: str = "") -> ApiError:
    details = _details(name, group, resource) if resource else None
    return ApiError(403, "Forbidden", message, details)


def method_not_allowed(verb: str, resource: str) -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method on the requested resource ({verb} {resource})",
    )


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(accepted)}",
    )


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def too_many_requests(message: str, retry_after: int = 1) -> ApiError:
    return ApiError(
        429,
        "TooManyRequests",
        message,
        {"retryAfterSeconds": retry_after},
        {"Retry-After": str(retry_after)},
    )


def internal(message: str) -> ApiError:
    return ApiError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        {"causes": [{"message": message}]},
    )


def path_not_found(path: str) -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})
