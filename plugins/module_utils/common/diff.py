# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Desired vs actual state: subset check, volatile fields, before/after for ``--diff``.

API
---
``subset_differences(desired, actual, ignore=()) -> list[str]``
    Dotted paths (``spec.template.containers[0].image``) where ``desired`` is not
    contained in ``actual``. Dicts: every desired key must exist in actual with a
    contained value (extra actual keys are fine: the server adds defaults). Lists:
    same length, element by element (order matters, as in Kubernetes lists).
    Scalars: equal (``1 == 1.0``; ``True`` is not ``1``). ``ignore`` holds dotted
    paths to skip (see ``strip_volatile`` for the syntax).

``is_subset(desired, actual, ignore=()) -> bool``
    ``not subset_differences(...)``: "would applying desired change nothing?".

``strip_volatile(obj, paths=VOLATILE_FIELDS) -> copy``
    A deep copy of ``obj`` without the fields that change on every write
    (``metadata.resourceVersion``, ``metadata.managedFields``, ...). A path is dotted
    keys; ``*`` matches every key of a dict or every item of a list
    (``spec.containers.*.terminationMessagePath``). Missing paths are ignored.

``make_diff(before, after, ignore=VOLATILE_FIELDS) -> {"before": ..., "after": ...}``
    The dict Ansible expects in a result's ``diff`` key, volatile fields removed,
    ``None`` shown as ``{}``.

``has_changed(before, after, ignore=VOLATILE_FIELDS) -> bool``
    True when the two differ once volatile fields are removed (a change of only
    ``resourceVersion`` is not a change).
"""

from __future__ import annotations

import copy

VOLATILE_FIELDS = (
    "metadata.resourceVersion",
    "metadata.managedFields",
    "metadata.generation",
    "metadata.uid",
    "metadata.creationTimestamp",
    "metadata.selfLink",
)


def _scalar_equal(desired, actual) -> bool:
    if isinstance(desired, bool) or isinstance(actual, bool):
        return type(desired) is type(actual) and desired == actual
    return desired == actual


def _ignored(path: str, ignore: tuple) -> bool:
    parts = _split(path)
    for pattern in ignore:
        want = pattern.split(".")
        if len(want) == len(parts) and all(w in ("*", p) for w, p in zip(want, parts, strict=True)):
            return True
    return False


def _split(path: str) -> list[str]:
    """``a.b[0].c`` -> ``["a", "b", "0", "c"]``."""
    return [part for part in path.replace("[", ".").replace("]", "").split(".") if part]


def _walk(desired, actual, path: str, ignore: tuple, out: list) -> None:
    if path and _ignored(path, ignore):
        return
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            out.append(path or ".")
            return
        for key, value in desired.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in actual:
                if not _ignored(sub, ignore):
                    out.append(sub)
                continue
            _walk(value, actual[key], sub, ignore, out)
    elif isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            out.append(path or ".")
            return
        for index, (want, have) in enumerate(zip(desired, actual, strict=True)):
            _walk(want, have, f"{path}[{index}]", ignore, out)
    elif not _scalar_equal(desired, actual):
        out.append(path or ".")


def subset_differences(desired, actual, ignore=()) -> list[str]:
    """Paths where ``desired`` is not contained in ``actual``."""
    out: list[str] = []
    _walk(desired, actual, "", tuple(ignore), out)
    return out


def is_subset(desired, actual, ignore=()) -> bool:
    """True when everything in ``desired`` is already in ``actual``."""
    return not subset_differences(desired, actual, ignore)


def _remove(obj, parts: list[str]) -> None:
    if not parts:
        return
    head, rest = parts[0], parts[1:]
    if isinstance(obj, dict):
        keys = list(obj) if head == "*" else [head] if head in obj else []
        for key in keys:
            if rest:
                _remove(obj[key], rest)
            else:
                del obj[key]
    elif isinstance(obj, list) and head == "*" and rest:
        for item in obj:
            _remove(item, rest)


def strip_volatile(obj, paths=VOLATILE_FIELDS):
    """A deep copy of ``obj`` without the volatile ``paths``."""
    clean = copy.deepcopy(obj)
    for path in paths:
        _remove(clean, path.split("."))
    return clean


def make_diff(before, after, ignore=VOLATILE_FIELDS) -> dict:
    """``{"before": ..., "after": ...}`` for an Ansible result's ``diff``."""
    return {
        "before": strip_volatile(before, ignore) if before is not None else {},
        "after": strip_volatile(after, ignore) if after is not None else {},
    }


def has_changed(before, after, ignore=VOLATILE_FIELDS) -> bool:
    """True when ``before`` and ``after`` differ outside the volatile fields."""
    return strip_volatile(before, ignore) != strip_volatile(after, ignore)


def merge_diffs(diffs: dict) -> dict:
    """One ``diff`` for a result from several keyed ``make_diff`` results
    (``{"Node/a": {"before": .., "after": ..}}`` -> ``{"before": {"Node/a": ..}, ...}``)."""
    return {"before": {key: d.get("before") for key, d in diffs.items()},
            "after": {key: d.get("after") for key, d in diffs.items()}}
