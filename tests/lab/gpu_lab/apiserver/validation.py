"""Pruning, defaulting and validation of objects against a ``Schema``.

The order follows the real server's decoding of custom resources: drop nulls that the
schema does not allow, prune (or, under ``fieldValidation=Strict``, report) unknown
fields, apply defaults, then validate types, required fields, enums and bounds. Messages
are those of kube-openapi as the API server reports them.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from .errors import FieldError
from .schema import Schema, json_type, ordered_types, type_matches

# Fields every object's metadata may carry (ObjectMeta); others are unknown.
OBJECT_META_FIELDS = frozenset(
    [
        "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
        "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
        "annotations", "ownerReferences", "finalizers", "managedFields",
    ]
)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def prune(value: Any, schema: Schema, path: str, unknown: list[str], root: bool = False) -> Any:
    """Remove fields the schema does not know; record their paths in ``unknown``."""
    if isinstance(value, dict):
        _prune_nulls(value, schema)
        props = schema.properties
        extra = schema.additional
        for key in list(value):
            child_path = join(path, key)
            if (root or schema.embedded_resource) and key in ("apiVersion", "kind"):
                continue
            if (root or schema.embedded_resource) and key == "metadata":
                _prune_metadata(value[key], child_path, unknown)
                continue
            if key in props:
                value[key] = prune(value[key], props[key], child_path, unknown)
            elif extra is not None:
                value[key] = prune(value[key], extra, _map_path(path, key), unknown)
            elif schema.preserve_unknown or schema.is_any:
                continue
            else:
                unknown.append(child_path)
                del value[key]
    elif isinstance(value, list):
        items = schema.items
        for i, item in enumerate(value):
            value[i] = prune(item, items, index(path, i), unknown)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and schema.quantity:
        return canonical_quantity(value)
    return value


def canonical_quantity(value: float) -> str:
    """A number sent for a Quantity, as the server serializes it (``2``, ``500m``)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def _map_path(path: str, key: str) -> str:
    return f"{path}[{key}]"


def _prune_nulls(value: dict[str, Any], schema: Schema) -> None:
    for key in [k for k, v in value.items() if v is None]:
        child = schema.properties.get(key) or schema.additional
        if child is not None and not child.nullable and not child.is_any:
            del value[key]


def _prune_metadata(meta: Any, path: str, unknown: list[str]) -> None:
    if not isinstance(meta, dict):
        return
    for key in list(meta):
        if key not in OBJECT_META_FIELDS:
            unknown.append(join(path, key))
            del meta[key]


def apply_defaults(value: Any, schema: Schema) -> None:
    """Fill in ``default`` values top-down, as the API server does on read and write."""
    if isinstance(value, dict):
        for key, child in schema.properties.items():
            if key not in value and "default" in child.raw:
                value[key] = copy.deepcopy(child.raw["default"])
            if key in value:
                apply_defaults(value[key], child)
        extra = schema.additional
        if extra is not None and not schema.properties:
            for item in value.values():
                apply_defaults(item, extra)
    elif isinstance(value, list):
        items = schema.items
        for item in value:
            apply_defaults(item, items)


def validate(value: Any, schema: Schema, path: str, errors: list[FieldError]) -> None:
    """Append a ``FieldError`` for each violation found under ``path``."""
    if value is None:
        if not schema.nullable and not schema.is_any and schema.types:
            _type_error(path, value, schema.types, errors)
        return
    types = schema.types
    if types and not type_matches(value, types):
        _type_error(path, value, types, errors)
        return
    _validate_scalar(value, schema, path, errors)
    _validate_combinators(value, schema, path, errors)
    if isinstance(value, dict):
        _validate_object(value, schema, path, errors)
    elif isinstance(value, list):
        _validate_array(value, schema, path, errors)


def _type_error(path: str, value: Any, types: set[str], errors: list[FieldError]) -> None:
    got = json_type(value)
    want = ordered_types(types)
    errors.append(
        FieldError("TypeInvalid", path, got, f'{path} in body must be of type {want}: "{got}"')
    )


def _validate_scalar(value: Any, schema: Schema, path: str, errors: list[FieldError]) -> None:
    raw = schema.raw
    if "enum" in raw and value not in raw["enum"]:
        errors.append(FieldError("NotSupported", path, value, supported=list(raw["enum"])))
        return
    if isinstance(value, str):
        if "maxLength" in raw and len(value) > raw["maxLength"]:
            detail = f"may not be more than {raw['maxLength']} bytes"
            errors.append(FieldError("TooLong", path, value, detail))
        if "minLength" in raw and len(value) < raw["minLength"]:
            detail = f"{path} in body should be at least {raw['minLength']} chars long"
            errors.append(FieldError("Invalid", path, value, detail))
        pattern = raw.get("pattern")
        if pattern and not _pattern_matches(pattern, value):
            errors.append(
                FieldError("Invalid", path, value, f"{path} in body should match '{pattern}'")
            )
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in raw and value < raw["minimum"]:
            detail = f"{path} in body should be greater than or equal to {raw['minimum']}"
            errors.append(FieldError("Invalid", path, value, detail))
        if "maximum" in raw and value > raw["maximum"]:
            detail = f"{path} in body should be less than or equal to {raw['maximum']}"
            errors.append(FieldError("Invalid", path, value, detail))


def _pattern_matches(pattern: str, value: str) -> bool:
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return True


def _validate_combinators(value: Any, schema: Schema, path: str, errors: list[FieldError]) -> None:
    raw = schema.raw
    for key, rule in (("anyOf", "at least one schema (anyOf)"), ("oneOf", "one and only one")):
        alternatives = raw.get(key)
        if not alternatives or all(set(a) <= {"type"} for a in alternatives):
            continue  # plain type unions are handled by Schema.types
        passing = 0
        for alt in alternatives:
            trial: list[FieldError] = []
            validate(value, Schema(alt, schema._defs), path, trial)
            if "required" in alt and isinstance(value, dict):
                trial += [FieldError("Required", path) for r in alt["required"] if r not in value]
            passing += not trial
        if (key == "anyOf" and passing == 0) or (key == "oneOf" and passing != 1):
            what = rule if key == "anyOf" else "one and only one schema (oneOf)"
            errors.append(FieldError("Invalid", "", "", f'"{path}" must validate {what}'))


def _validate_object(value: dict, schema: Schema, path: str, errors: list[FieldError]) -> None:
    for name in schema.raw.get("required", ()):
        if name not in value:
            errors.append(FieldError("Required", join(path, name)))
    props = schema.properties
    extra = schema.additional
    for key, item in value.items():
        if key in props:
            validate(item, props[key], join(path, key), errors)
        elif extra is not None:
            validate(item, extra, _map_path(path, key), errors)
    raw = schema.raw
    if "maxProperties" in raw and len(value) > raw["maxProperties"]:
        detail = f"must have at most {raw['maxProperties']} items"
        errors.append(FieldError("TooMany", path, len(value), detail))


def _validate_array(value: list, schema: Schema, path: str, errors: list[FieldError]) -> None:
    raw = schema.raw
    if "maxItems" in raw and len(value) > raw["maxItems"]:
        errors.append(
            FieldError("TooMany", path, len(value), f"must have at most {raw['maxItems']} items")
        )
    if "minItems" in raw and len(value) < raw["minItems"]:
        detail = f"{path} in body should have at least {raw['minItems']} items"
        errors.append(FieldError("Invalid", path, value, detail))
    items = schema.items
    for i, item in enumerate(value):
        validate(item, items, index(path, i), errors)
    _validate_list_keys(value, schema, path, errors)


def _validate_list_keys(value: list, schema: Schema, path: str, errors: list[FieldError]) -> None:
    list_type = schema.raw.get("x-kubernetes-list-type")
    seen: set[str] = set()
    for i, item in enumerate(value):
        if list_type == "set":
            key = repr(item)
        elif list_type == "map" and isinstance(item, dict):
            key = repr([item.get(k) for k in schema.map_keys])
        else:
            return
        if key in seen:
            errors.append(FieldError("Duplicate", index(path, i), item))
        seen.add(key)
