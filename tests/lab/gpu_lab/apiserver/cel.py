"""CRD validation rules (``x-kubernetes-validations``) evaluated with cel-python.

Each rule runs with ``self`` bound to the value at its schema node (and ``oldSelf`` on
updates, when the old object had that value: transition rules are skipped on create).
A false result is a field error in the real server's words
(``spec.tls: Invalid value: "object": <message>``). Kubernetes' string extensions the
upstream CRDs use (``lowerAscii``, ``split``...) are provided; a rule that does not
compile or evaluate is skipped and logged once, never guessed.
"""

from __future__ import annotations

import logging
from typing import Any

from .errors import FieldError
from .schema import Schema, json_type

log = logging.getLogger(__name__)

try:  # optional: without cel-python the rules are skipped (logged once)
    import celpy
    from celpy import celtypes
except ImportError:  # pragma: no cover - the lab group pins cel-python
    celpy = None

_REASONS = {"FieldValueForbidden": "Forbidden", "FieldValueRequired": "Required",
            "FieldValueDuplicate": "Duplicate", "FieldValueInvalid": "Invalid"}


def _functions() -> dict[str, Any]:
    s = celtypes.StringType
    return {
        "lowerAscii": lambda v: s(str(v).lower()),
        "upperAscii": lambda v: s(str(v).upper()),
        "trim": lambda v: s(str(v).strip()),
        "split": lambda v, sep: celtypes.ListType([s(x) for x in str(v).split(str(sep))]),
        "indexOf": lambda v, sub: celtypes.IntType(str(v).find(str(sub))),
        "replace": lambda v, a, b: s(str(v).replace(str(a), str(b))),
    }


class CelRules:
    def __init__(self) -> None:
        self._programs: dict[str, Any] = {}
        self._has_rules: dict[int, bool] = {}
        self._warned: set[str] = set()
        self._env = celpy.Environment() if celpy is not None else None
        if celpy is None:
            log.warning("cel-python is not installed: x-kubernetes-validations are skipped")

    def _program(self, rule: str) -> Any:
        if rule not in self._programs:
            try:
                self._programs[rule] = self._env.program(self._env.compile(rule),
                                                         functions=_functions())
            except Exception as exc:
                self._skip(rule, exc)
                self._programs[rule] = None
        return self._programs[rule]

    def _skip(self, rule: str, exc: Exception) -> None:
        if rule not in self._warned:
            self._warned.add(rule)
            log.warning("CEL rule skipped (%s): %s", type(exc).__name__, rule)

    def _subtree_has_rules(self, schema: Schema, depth: int = 0) -> bool:
        key = id(schema.raw)
        if key not in self._has_rules:
            self._has_rules[key] = False  # cycles (built-in $refs) end here
            found = bool(schema.raw.get("x-kubernetes-validations")) or (depth < 64 and (
                any(self._subtree_has_rules(c, depth + 1) for c in schema.properties.values())
                or ("items" in schema.raw and self._subtree_has_rules(schema.items, depth + 1))
                or (schema.additional is not None and "additionalProperties" in schema.raw
                    and self._subtree_has_rules(schema.additional, depth + 1))))
            self._has_rules[key] = found
        return self._has_rules[key]

    def errors(self, new: Any, old: Any, schema: Schema, path: str = "") -> list[FieldError]:
        if self._env is None or not self._subtree_has_rules(schema):
            return []
        out: list[FieldError] = []
        self._walk(new, old, schema, path, out)
        return out

    def _walk(self, value: Any, old: Any, schema: Schema, path: str, out: list) -> None:
        if value is None or not self._subtree_has_rules(schema):
            return
        for rule in schema.raw.get("x-kubernetes-validations") or []:
            self._check(rule, value, old, path, out)
        if isinstance(value, dict):
            olds = old if isinstance(old, dict) else {}
            for key, item in value.items():
                child = schema.properties.get(key) or schema.additional
                if child is not None:
                    sub = f"{path}.{key}" if key in schema.properties else f"{path}[{key}]"
                    self._walk(item, olds.get(key), child, sub.lstrip("."), out)
        elif isinstance(value, list):
            olds = old if isinstance(old, list) and len(old) == len(value) else []
            for i, item in enumerate(value):
                self._walk(item, olds[i] if olds else None, schema.items, f"{path}[{i}]", out)

    def _check(self, rule: dict[str, Any], value: Any, old: Any, path: str, out: list) -> None:
        text = rule.get("rule", "")
        if "oldSelf" in text and old is None:
            return  # a transition rule: only checked on updates
        program = self._program(text)
        if program is None:
            return
        activation = {"self": celpy.json_to_cel(value)}
        if old is not None:
            activation["oldSelf"] = celpy.json_to_cel(old)
        try:
            result = program.evaluate(activation)
        except Exception as exc:
            self._skip(text, exc)
            return
        if isinstance(result, celtypes.BoolType) and not bool(result):
            field = path + rule.get("fieldPath", "") if rule.get("fieldPath") else path
            kind = _REASONS.get(rule.get("reason", ""), "Invalid")
            message = rule.get("message") or f"failed rule: {text}"
            if kind == "Invalid":
                out.append(FieldError("Invalid", field.lstrip("."), json_type(value), message))
            else:
                out.append(FieldError(kind, field.lstrip("."), detail=message))
