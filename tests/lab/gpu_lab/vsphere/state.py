"""``$GPU_LAB_HOME/vsphere.json``: how tools and inventories reach the running lab."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gpu_lab.vsphere.paths import state_file
from gpu_lab.vsphere.process import VsphereLab


def save_state(lab: VsphereLab, path: Path | None = None) -> Path:
    """Write the connection file, readable by the owner only (it holds the password)."""
    path = Path(path or state_file())
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(lab.to_json(), handle, indent=2, sort_keys=True)
    tmp.replace(path)
    return path


def load_state(path: Path | None = None) -> VsphereLab | None:
    path = Path(path or state_file())
    if not path.is_file():
        return None
    return VsphereLab(**json.loads(path.read_text()))


def clear_state(path: Path | None = None) -> None:
    Path(path or state_file()).unlink(missing_ok=True)
