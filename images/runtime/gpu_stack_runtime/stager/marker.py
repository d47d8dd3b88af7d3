"""The completion marker: a JSON file inside the published model, written before publish.

Because it is inside the staging dir when the rename happens, the marker exists at the
destination exactly when the model is complete. A rerun compares the source's listing
with the marker's `source_key` and checks each file's size and mtime: no file is read.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from pathlib import Path

from gpu_stack_runtime import __version__
from gpu_stack_runtime.common.contract import MARKER_FORMAT, MARKER_NAME
from gpu_stack_runtime.stager.digest import file_digests
from gpu_stack_runtime.stager.model import Listing

log = logging.getLogger("gpu_stack_runtime.stager")

MARKER = MARKER_NAME  # the schema (top-level and per-file keys) is in common/contract.py
FORMAT = MARKER_FORMAT


def source_key(source: dict, listing: Listing) -> str:
    """A digest of everything that defines the staged content (no secrets in `source`)."""
    doc = {"source": source, "revision": listing.revision,
           "files": sorted((f.identity() for f in listing.files), key=lambda d: d["path"])}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def build(source: dict, listing: Listing, results: dict, started: float, finished: float) -> dict:
    files = []
    for rf in sorted(listing.files, key=lambda f: f.path):
        res = results[rf.path]
        files.append({**res.as_json(), "mtime_ns": res.mtime_ns, "etag": rf.etag})
    return {
        "format": FORMAT,
        "tool": f"gpu-stack-stage {__version__}",
        "source": source,
        "revision": listing.revision,
        "source_key": source_key(source, listing),
        "file_count": len(files),
        "total_bytes": sum(f["size"] for f in files),
        "files": files,
        "staged_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "duration_seconds": round(finished - started, 3),
    }


def write(directory: Path, doc: dict) -> None:
    path = directory / MARKER
    tmp = directory / (MARKER + ".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read(directory: Path) -> dict | None:
    try:
        doc = json.loads((directory / MARKER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable marker in %s: %s", directory, exc)
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else None


def changed_files(directory: Path, doc: dict) -> list[str]:
    """Files whose size or mtime differ from the marker, or that are missing (stat only)."""
    bad = []
    for entry in doc.get("files", []):
        try:
            st = (directory / entry["path"]).stat()
        except OSError:
            bad.append(entry["path"])
            continue
        if st.st_size != entry["size"] or st.st_mtime_ns != entry["mtime_ns"]:
            bad.append(entry["path"])
    return bad


def corrupt_files(directory: Path, doc: dict, paths=None) -> list[str]:
    """Files whose sha256 no longer matches the marker (reads every byte)."""
    bad = []
    for entry in doc.get("files", []):
        if paths is not None and entry["path"] not in paths:
            continue
        path = directory / entry["path"]
        try:
            actual = file_digests(path)["sha256"]
        except OSError:
            bad.append(entry["path"])
            continue
        if actual != entry["sha256"]:
            bad.append(entry["path"])
    return bad
