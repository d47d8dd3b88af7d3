# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""What an overlay changes in a base object, as RFC 6902 JSON patch operations.

JSON patches mean the same for every kind (kustomize applies them as written), where a
strategic merge patch would merge the lists of built-in kinds by their keys. Lists are
replaced whole; a key the site does not have is removed.
"""

from __future__ import annotations

import copy


def _pointer(path: list[str]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def json_patch(before: dict, after: dict, path: list | None = None) -> list[dict]:
    """The operations that turn ``before`` into ``after`` (dicts; lists compared whole)."""
    path = path or []
    ops = []
    for key in sorted(set(before) | set(after)):
        here = [*path, key]
        if key not in after:
            ops.append({"op": "remove", "path": _pointer(here)})
        elif key not in before:
            ops.append({"op": "add", "path": _pointer(here), "value": after[key]})
        elif before[key] == after[key]:
            continue
        elif isinstance(before[key], dict) and isinstance(after[key], dict):
            ops += json_patch(before[key], after[key], here)
        else:
            ops.append({"op": "replace", "path": _pointer(here), "value": after[key]})
    return ops


def _unpointer(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]


def apply_patch(obj: dict, ops: list[dict]) -> dict:
    """Apply ``json_patch``'s operations (add, remove, replace on dict paths)."""
    out = copy.deepcopy(obj)
    for op in ops:
        *parents, last = _unpointer(op["path"])
        node = out
        for key in parents:
            node = node[key]
        if op["op"] == "remove":
            del node[last]
        else:
            node[last] = copy.deepcopy(op["value"])
    return out
