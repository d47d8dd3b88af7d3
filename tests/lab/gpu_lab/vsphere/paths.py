"""Where the lab keeps its state: $GPU_LAB_HOME, default ``.lab/`` at the repository root."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[4]


def lab_home() -> Path:
    home = Path(os.environ.get("GPU_LAB_HOME") or REPO_ROOT / ".lab")
    home.mkdir(parents=True, exist_ok=True)
    return home


def state_file() -> Path:
    """The connection file other tools read: ``$GPU_LAB_HOME/vsphere.json``."""
    return lab_home() / "vsphere.json"
