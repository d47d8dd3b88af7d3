"""Is the model directory ready to serve? config.json, the weights, the stager's marker.

The model stager (``gpu_stack_runtime.stager``) publishes a model with a completion
marker, a JSON object at the root of the model directory that exists exactly when the
model is complete (written into the staging directory before the atomic rename). Its
``files`` list names each file with its ``path``, ``size`` and ``sha256``; the launcher
checks the sizes by ``stat`` and then each file's sha256, so a shard damaged on the volume
(same size, even same mtime) is refused before it is served. The cost: the model is read
once more at start (hashed in parallel), on top of the read vLLM does to load it; a
damaged file names itself and is repaired by ``model_stage`` with ``verify: digests``.
``MARKER_NAME`` comes from the controller/runtime contract
(``gpu_stack_runtime.common.contract``), as the stager's does.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gpu_stack_runtime.common.contract import MARKER_NAME
from gpu_stack_runtime.launcher.errors import EXIT_MODEL, LaunchError
from gpu_stack_runtime.stager.digest import file_digests

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _read_json_object(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise LaunchError(f"cannot read the {what} {path}: {exc.strerror}", EXIT_MODEL) from exc
    except ValueError as exc:
        raise LaunchError(f"the {what} {path} is not valid JSON: {exc}", EXIT_MODEL) from exc
    if not isinstance(data, dict):
        raise LaunchError(f"the {what} {path} is not a JSON object", EXIT_MODEL)
    return data


def _check_index(directory: Path) -> None:
    for name in _INDEX_FILES:
        index_path = directory / name
        if not index_path.is_file():
            continue
        index = _read_json_object(index_path, "weight index")
        shards = sorted(set((index.get("weight_map") or {}).values()))
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise LaunchError(
                f"model directory {directory}: {len(missing)} of {len(shards)} weight shards "
                f"named in {name} are missing: {', '.join(missing[:5])}",
                EXIT_MODEL,
            )


def _check_marker_files(directory: Path, marker: dict) -> None:
    entries = marker.get("files")
    if entries is None:
        return
    if not isinstance(entries, list):
        raise LaunchError(f"completion marker in {directory}: 'files' is not a list", EXIT_MODEL)
    bad = []
    for entry in entries:
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or rel.startswith("/") or ".." in Path(rel).parts:
            raise LaunchError(f"completion marker in {directory}: bad file entry {entry!r}",
                              EXIT_MODEL)
        try:
            size = (directory / rel).stat().st_size
        except OSError:
            bad.append(f"{rel} (missing)")
            continue
        if isinstance(entry.get("size"), int) and size != entry["size"]:
            bad.append(f"{rel} ({size} bytes, marker says {entry['size']})")
    if bad:
        raise LaunchError(
            f"model directory {directory}: {len(bad)} of {len(entries)} files listed in the "
            f"completion marker are missing or changed: {', '.join(bad[:5])}",
            EXIT_MODEL,
        )
    _check_marker_digests(directory, entries)


def _check_marker_digests(directory: Path, entries: list) -> None:
    hashed = [e for e in entries if isinstance(e.get("sha256"), str)]
    with ThreadPoolExecutor(max_workers=4) as pool:  # hashlib releases the GIL
        actual = list(pool.map(lambda e: file_digests(directory / e["path"])["sha256"], hashed))
    bad = [e["path"] for e, digest in zip(hashed, actual, strict=True) if digest != e["sha256"]]
    if bad:
        raise LaunchError(
            f"model directory {directory}: {len(bad)} of {len(entries)} files do not match "
            f"the sha256 in the completion marker (damaged on the volume): "
            f"{', '.join(bad[:5])}; stage the model again with verify: digests",
            EXIT_MODEL,
        )


def check_model_dir(path: str | Path) -> dict:
    """Check that path holds a complete, published model; return the stager's marker.

    Raises LaunchError (exit code EXIT_MODEL) naming the first thing that is missing.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise LaunchError(f"model directory {directory} does not exist or is not a directory",
                          EXIT_MODEL)
    marker_path = directory / MARKER_NAME
    if not marker_path.is_file():
        raise LaunchError(
            f"model directory {directory} has no completion marker {MARKER_NAME}: "
            "the model stager has not finished publishing it",
            EXIT_MODEL,
        )
    marker = _read_json_object(marker_path, "completion marker")
    _check_marker_files(directory, marker)
    if not (directory / "config.json").is_file():
        raise LaunchError(f"model directory {directory} has no config.json", EXIT_MODEL)
    _read_json_object(directory / "config.json", "model config")
    weights = [p for pattern in WEIGHT_PATTERNS for p in directory.glob(pattern)]
    if not weights:
        raise LaunchError(
            f"model directory {directory} has no weights ({', '.join(WEIGHT_PATTERNS)})",
            EXIT_MODEL,
        )
    _check_index(directory)
    return marker
