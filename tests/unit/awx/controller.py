"""The controller configuration as Ansible renders it (shared by the AWX tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
# The checks run with the main toolchain (Python 3.11, pyproject.toml's `dev` group: the
# pinned ansible package, whose awx.awx they validate against, and ansible-builder). The
# Python 3.12 toolchain's newer ansible package ships no awx.awx.
MAIN_TOOLCHAIN_ONLY = pytest.mark.skipif(
    sys.version_info[:2] != (3, 11),
    reason="AWX checks run with the Python 3.11 toolchain (the dev group's ansible 12.3.0)")
CONFIGURE = REPO / "playbooks/awx/configure.yml"
# the vault a site passes with -e @vault.yml (values are placeholders)
VAULT = {"vault_vcenter_password": "vc-secret", "vault_openshift_token": "sha256~token",
         "vault_hf_token": "hf_secret", "vault_llm_api_key": "sk-secret"}


def render(extra_vars: dict | None = None, playbook: Path = CONFIGURE) -> dict:
    """Every awx.awx task of PLAYBOOK rendered, and its modules' AnsibleModule kwargs."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("render_configuration.py")),
         str(playbook), json.dumps({**VAULT, **(extra_vars or {})})],
        capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def tasks_of(configuration: dict, module: str) -> list[dict]:
    """The rendered parameters of every task (and loop item) calling MODULE."""
    return [task["params"] for task in configuration["tasks"] if task["module"] == module]
