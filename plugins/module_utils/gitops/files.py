# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Write an export's files: only those whose text changes; remove the stale ones.

The export owns ``base/``, ``overlays/<inventory>/`` and ``argocd/<inventory>.yaml``
under the destination: files there it no longer renders (``.yaml``, ``.md``) are
removed; nothing else in the destination (another inventory's overlay, the repository's
own files) is touched. Check mode reads and compares, and writes nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)

_OURS = (".yaml", ".md")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _owned(dest: Path, roots: list[str]) -> set[str]:
    found = set()
    for root in roots:
        top = dest / root
        if top.is_file():
            found.add(root)
        elif top.is_dir():
            found |= {p.relative_to(dest).as_posix() for p in top.rglob("*")
                      if p.is_file() and p.suffix in _OURS}
    return found


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _prune_dirs(dest: Path, rel: str) -> None:
    parent = (dest / rel).parent
    while parent != dest and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def sync(dest: str, roots: list[str], wanted: dict[str, str], check_mode: bool) -> dict:
    """Bring the files under ``roots`` to ``wanted``; what was (or would be) written."""
    base = Path(dest)
    if base.exists() and not base.is_dir():
        raise InvalidInputError(f"dest {dest} exists and is not a directory")
    written, diff_before, diff_after = [], {}, {}
    for rel, text in sorted(wanted.items()):
        before = _read(base / rel)
        if before == text:
            continue
        written.append(rel)
        diff_before[rel], diff_after[rel] = before or "", text
        if not check_mode:
            _write(base / rel, text)
    removed = sorted(_owned(base, roots) - set(wanted))
    for rel in removed:
        diff_before[rel], diff_after[rel] = _read(base / rel) or "", ""
        if not check_mode:
            (base / rel).unlink()
            _prune_dirs(base, rel)
    return {"written": written, "removed": removed,
            "diff": {"before": diff_before, "after": diff_after}}
