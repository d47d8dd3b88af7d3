# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The one check of a model directory on the model volume (``model_dir``).

A ``model_dir`` becomes part of paths under the volume's mount, of environment values
and of a command run in a pod, so it is refused before the first write unless it is a
plain relative path: segments of ASCII letters, digits, ``.``, ``_`` and ``-`` joined by
single ``/``; no leading or trailing ``/``, no empty, ``.`` or ``..`` segment, and none
of the names the staging contract reserves (``.gpu-stack-...``). Such a value needs no
quoting anywhere and cannot reach outside its directory.

API
---
``check_model_dir(value, option="model_dir") -> str``: the value, or
``InvalidInputError`` naming the option and what is wrong.
"""

from __future__ import annotations

import re

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_RESERVED_PREFIX = ".gpu-stack"  # the stager's area and marker (common/contract.py)
MAX_LENGTH = 255


def _problem(value) -> str | None:
    if not isinstance(value, str) or not value:
        return "it is empty or not a string"
    if len(value) > MAX_LENGTH:
        return f"it is longer than {MAX_LENGTH} characters"
    if value.startswith("/"):
        return "no leading /"
    bad = sorted({c for c in value if not (c == "/" or _SEGMENT.fullmatch(c))})
    if bad:
        return ("it may only hold letters, digits, '.', '_', '-' and '/'; found "
                + ", ".join(repr(c) for c in bad))
    for segment in value.split("/"):
        if segment in ("", ".", ".."):
            return f"it has an empty, '.' or '..' segment ({segment!r})"
        if segment.startswith(_RESERVED_PREFIX):
            return f"it uses the reserved name {segment!r}"
    return None


def check_model_dir(value, option: str = "model_dir") -> str:
    """``value`` when it is a safe relative directory on the model volume."""
    problem = _problem(value)
    if problem:
        raise InvalidInputError(f"{option} must be a relative path on the model volume: "
                                f"{problem}; got {value!r}", option=option)
    return value
