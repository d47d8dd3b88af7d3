"""Is the model directory ready to serve? config.json, the weights, the stager's marker.

The model stager (``gpu_stack_runtime.stager``) publishes a model by writing a
completion marker, a JSON object, at the root of the model directory after every file
is in place. ``MARKER_NAME`` is the single place the launcher names that file.
"""

from __future__ import annotations

import json
from pathlib import Path

from gpu_stack_runtime.launcher.errors import EXIT_MODEL, LaunchError

MARKER_NAME = ".gpu-stack-staged.json"
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
