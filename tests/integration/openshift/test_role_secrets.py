"""No role option that holds a secret appears in the output at -vvv.

The stage playbooks run against a lab with the lab's inventory, the API server reached
by a bearer token (``gpu_stack_k8s_auth.api_key``: the lab's random admin token, no
kubeconfig), a planted API key (``ray_vllm_api_key``) and planted source credentials
(``model_storage_credentials``). Each run is asserted to have used the secret (the run
succeeds only with the token; the API key is read back from its Secret), and none of the
planted values may appear in stdout or stderr.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import sys

import pytest
from gpu_lab.gpu_inventory import StaticGpuInventory, reference_site
from kubernetes import client

from .. import playbook
from .k8s_helpers import REPO, api

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# An image the lab's kubelet simulates: what is written is under test, not vLLM.
SIM_IMAGE = "registry.example.com/example/serving-sim:1.0"
NS = "llm"


@pytest.fixture(scope="module")
def site(k8s_lab_factory, tmp_path_factory):
    """A lab, its tiny model where the lab inventory looks for it, and the planted secrets."""
    lab = k8s_lab_factory(gpu_inventory=StaticGpuInventory(reference_site()))
    work = tmp_path_factory.mktemp("role-secrets")
    subprocess.run([sys.executable, "-m", "gpu_lab.tiny_model",
                    str(lab.settings.home / "models" / "tiny-llama")],
                   check=True, capture_output=True)
    planted = {"token": lab.admin_token, "api_key": f"s3cr3t-{secrets.token_hex(12)}",
               "source_token": f"s3cr3t-{secrets.token_hex(12)}"}
    auth = {"host": lab.url, "api_key": planted["token"],
            "ca_cert": str(lab.settings.k8s_dir / "ca.crt")}
    return lab, work, planted, {"gpu_stack_k8s_auth": auth, **playbook.lab_first_model()}


def _run(site, name: str, *extra: str, **more_vars):
    lab, work, _planted, base = site
    return playbook.run_playbook(
        work, playbook=REPO / "playbooks" / f"{name}.yml",
        inventory=str(REPO / "inventories" / "lab"), extra=("-vvv", *extra),
        vars_file={**base, **more_vars}, json_out=False,
        env={"GPU_LAB_HOME": str(lab.settings.home)})


def _failed(out: str) -> str:
    """The failed tasks' lines of a -vvv run (its tail is the play recap)."""
    lines = out.splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith(("fatal:", "failed:", "ERROR!"))]
    return "\n".join("\n".join(lines[i:i + 40]) for i in hits)[:6000] or out[-3000:]


def _assert_hidden(planted: dict, out: str) -> None:
    for what, value in planted.items():
        assert value not in out, f"{what} appears in the -vvv output"
        # nor in the encodings a careless task would print
        assert base64.b64encode(value.encode()).decode() not in out, f"{what} (base64)"


def test_stages_never_show_the_token_the_key_or_the_source_credentials(site):
    lab, _work, planted, _base = site
    core = client.CoreV1Api(api(lab))

    # stages 2 and 3 (ocp_gpu_nodes, gpu_operators): only the token reaches the API
    run = _run(site, "openshift")
    assert run.rc == 0, _failed(run.output)
    _assert_hidden(planted, run.output)
    allocatable = [n.status.allocatable.get("nvidia.com/gpu") for n in core.list_node().items]
    assert "2" in allocatable  # the run did its work with the token alone

    # stage 4 (model_storage) with source credentials
    run = _run(site, "storage", model_storage_credentials={"token": planted["source_token"]})
    assert run.rc == 0, _failed(run.output)
    _assert_hidden(planted, run.output)
    claim = core.read_namespaced_persistent_volume_claim("models", NS)
    assert "tiny-llama" in json.dumps(claim.metadata.annotations or {})

    # stage 5 (serving_plan, ray_vllm) in check mode: every task of the role, no write
    serving = {"ray_vllm_api_key": planted["api_key"], "ray_vllm_image": SIM_IMAGE}
    run = _run(site, "serving", "--check", "--diff", **serving)
    assert run.rc == 0, _failed(run.output)
    assert "Using module file" in run.output and "/ray_vllm_cluster.py" in run.output
    _assert_hidden(planted, run.output)

    # for real, failing at once in the wait (wait_timeout 0): the failure's result too
    run = _run(site, "serving", **serving, ray_vllm_wait_timeout=0)
    assert run.rc != 0, run.output[-3000:]
    # the failed task's result shows the module's arguments, the secret ones masked
    for option in ("llm_api_key", "api_key"):
        assert re.search(rf'\s"?{option}"?: "?VALUE_SPECIFIED_IN_NO_LOG_PARAMETER', run.output), \
            _failed(run.output)
    _assert_hidden(planted, run.output)
    secret = core.read_namespaced_secret("llm-api-key", NS)
    assert base64.b64decode(secret.data["api-key"]).decode() == planted["api_key"]

    # stage 6 (validate): reads the key from the Secret through the token
    run = _run(site, "validate", "--tags", "preflight")
    assert run.rc == 0, _failed(run.output)
    _assert_hidden(planted, run.output)
    assert "llm-api-key" in run.output, run.output[-3000:]
