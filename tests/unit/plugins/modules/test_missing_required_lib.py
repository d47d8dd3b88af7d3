"""Every module whose Python package may be missing says so with ``missing_required_lib``
before it does anything else.

Each case runs the module in a fresh Python in which the package cannot be imported
(``None`` in ``sys.modules``), so the module and every
module_utils file it pulls in are imported without it, as on a controller that skipped
``requirements.txt``. The options point at nothing that answers: a module that went on
would fail with a connection error, not with the missing library.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[4]

# The child: hide the packages named in argv[2], run the module argv[1] with the
# options of argv[3] (JSON) as Ansible would, print nothing of its own.
_CHILD = r"""
import importlib, json, sys

# None in sys.modules: every import of the package (or of a submodule) raises
# ModuleNotFoundError and importlib.util.find_spec() answers None, as for an absent one.
for name in json.loads(sys.argv[2]):
    sys.modules[name] = None
from ansible.module_utils.testing import patch_module_args

module = importlib.import_module("ansible_collections.llmops.gpu_stack.plugins.modules."
                                 + sys.argv[1])
with patch_module_args(json.loads(sys.argv[3])):
    module.main()
"""

_VCENTER = {"hostname": "127.0.0.1", "port": 1, "username": "user-x", "password": "secret-x",
            "validate_certs": False}
_K8S = {"host": "https://127.0.0.1:1", "api_key": "token-x", "validate_certs": False}
_ENDPOINT = {"base_url": "http://127.0.0.1:1", "model": "m", "wait_timeout": 1}

CASES = [
    ("esxi_gpu_info", "pyVmomi", "pyvmomi", dict(_VCENTER)),
    ("esxi_gpu_passthrough", "pyVmomi", "pyvmomi", dict(_VCENTER, esxi_hostnames=["esxi-0"])),
    ("vm_gpu_passthrough", "pyVmomi", "pyvmomi", dict(_VCENTER, vm_name="vm-0")),
    ("vm_gpu_passthrough", "kubernetes", "kubernetes",
     dict(_VCENTER, vm_name="vm-0", k8s_auth={"host": "https://127.0.0.1:1"})),
    ("gpu_fleet_report", "kubernetes", "kubernetes", dict(_K8S)),
    ("gpu_fleet_report", "pyVmomi", "pyvmomi", dict(_K8S, vcenter=_VCENTER)),
    ("ocp_gpu_nodes", "kubernetes", "kubernetes",
     dict(_K8S, workers=[{"vm": "vm-0", "gpus": 1}])),
    ("olm_operator", "kubernetes", "kubernetes",
     dict(_K8S, catalog="c", namespace="ns", package="p")),
    ("model_stage", "kubernetes", "kubernetes",
     dict(_K8S, model_dir="m", namespace="ns", pvc={"name": "models"},
          source={"type": "hub", "repo_id": "org/model"})),
    ("ray_vllm_cluster", "kubernetes", "kubernetes", dict(_K8S, namespace="ns")),
    ("llm_endpoint_check", "openai", "openai", dict(_ENDPOINT)),
    ("llm_load_test", "openai", "openai", dict(_ENDPOINT)),
    # openai without its HTTP client httpx2 (a partial install) is reported as openai
    ("llm_endpoint_check", "httpx2", "openai", dict(_ENDPOINT)),
]


def _run(module: str, blocked: list[str], args: dict) -> tuple[int, dict, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "K8S_AUTH_",
                                                                    "VMWARE_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "collections"), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", _CHILD, module, json.dumps(blocked),
                           json.dumps(args)], capture_output=True, text=True, timeout=120,
                          env=env, cwd=REPO, check=False)
    try:
        result = json.loads(done.stdout)
    except ValueError:
        result = {}
    return done.returncode, result, done.stdout + done.stderr


@pytest.mark.parametrize(("module", "package", "library", "args"), CASES,
                         ids=[f"{c[0]}-without-{c[1]}" for c in CASES])
def test_module_fails_with_missing_required_lib(module, package, library, args):
    rc, result, output = _run(module, [package], args)
    assert rc == 1 and result.get("failed") is True, output
    assert f"Failed to import the required Python library ({library})" in result["msg"], output
    # the kept import error goes with it (its traceback, shown at -vvv)
    # (where httpx2 is not installed at all, openai's own import stops at it)
    assert re.search(rf"No module named '({package}|httpx2)|import of {package} halted",
                     json.dumps(result.get("exception"))), output


_NO_OPENAI = pytest.mark.skipif(importlib.util.find_spec("openai") is None,
                                reason="needs the openai package (the serving group)")


@_NO_OPENAI
def test_load_test_without_matplotlib_refuses_a_chart_before_any_request(tmp_path):
    chart = tmp_path / "out" / "load.png"
    args = dict(_ENDPOINT, report_path=str(tmp_path / "out" / "load.json"),
                chart_path=str(chart))
    rc, result, output = _run("llm_load_test", ["matplotlib"], args)
    assert rc == 1 and result.get("failed") is True, output
    assert "Failed to import the required Python library (matplotlib)" in result["msg"], output
    assert "This is required for chart_path." in result["msg"], output
    assert not (tmp_path / "out").exists()


@_NO_OPENAI
def test_the_hook_leaves_the_package_importable_when_not_blocked():
    """Control: the same child with nothing blocked does not fail on a library (it gets
    as far as the endpoint, which does not answer)."""
    rc, result, output = _run("llm_endpoint_check", [], dict(_ENDPOINT))
    assert rc == 1 and result.get("failed") is True, output
    assert "required Python library" not in result["msg"], output
