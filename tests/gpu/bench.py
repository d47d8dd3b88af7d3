"""On the GPU machine: serve each run of a set, measure it, write $OUT/runs-SET.json.

Started by ``device.sh`` (which unpacks the carried packages and sets PYTHONPATH/PATH).
For each run: start vLLM either through the collection's launcher (``python -m
gpu_stack_runtime.launcher head``: production mode, it starts the Ray head with
``--num-gpus 1``, waits for the GPU and runs vLLM with ``--distributed-executor-backend
ray`` and the API-key middleware) or plainly (``python -m
vllm.entrypoints.openai.api_server``, vLLM's own single-GPU executor); wait for
``/health``; run the validate role's smoke test and load test code
(``plugins/module_utils/serving/endpoint.py`` and ``loadtest.py``); stop it; parse the
memory figures vLLM logged (``vllm_log.py``). Each run is written as soon as it ends, so a
call stopped at its time limit still returns the runs before.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / ".cache" / "gpu" / "models"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import vllm_log  # noqa: E402

PROMPT = "Write a short story about a cluster of GPUs serving language models."
LOAD = {"requests": 192, "concurrency": 32, "max_tokens": 128, "rounds": 2}
RUN_SECONDS = 150  # a start (about 60 s), the tests and the stop, with margin

# (name, model dir, max_model_len, gpu_memory_utilization, mode, measured load)
SETS = {  # in order of value: a call stopped early has the most useful runs
    "A": [
        ("llama-3-8b", 8192, 0.90, "launcher", True),
        ("llama-3-8b", 8192, 0.90, "plain", True),
        ("llama-2-13b", 4096, 0.90, "launcher", False),
        ("llama-3-8b", 4096, 0.80, "launcher", False),
    ],
    "B": [
        ("llama-2-13b", 2048, 0.80, "launcher", False),
        ("tiny", 2048, 0.50, "launcher", False),
        ("llama-2-13b", 4096, 0.90, "plain", False),
    ],
}


def _collection_path() -> str:
    """A directory whose ansible_collections/llmops/gpu_stack is this checkout."""
    base = Path("/tmp/gpu-check-collections")
    link = base / "ansible_collections" / "llmops" / "gpu_stack"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(ROOT)
    return str(base)


sys.path.insert(0, _collection_path())
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import (  # noqa: E402
    endpoint,
    loadtest,
)


def _sh(cmd: str) -> str:
    done = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120,
                          check=False)
    return (done.stdout or done.stderr).strip()


def device_facts() -> dict:
    import torch

    free, total = torch.cuda.mem_get_info()
    facts = {
        "gpu": _sh("nvidia-smi --query-gpu=name --format=csv,noheader"),
        "driver": _sh("nvidia-smi --query-gpu=driver_version --format=csv,noheader"),
        "cuda_driver": _sh("nvidia-smi | grep -o 'CUDA Version: [0-9.]*'"),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "mem_get_info_total_bytes": total, "mem_get_info_free_bytes": free,
        "python": sys.version.split()[0],
    }
    for name in ("vllm", "ray", "transformers", "openai"):
        facts[name] = _sh(f"{sys.executable} -c 'import {name}; print({name}.__version__)'")
    return facts


def _command(model: str, length: int, util: float, mode: str, port: int, key_file: Path,
             index: int) -> list[str]:
    model_dir = str(MODELS / model)
    extra = [] if model == "tiny" else ["--load-format", "dummy"]
    if mode == "plain":
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
                model_dir, "--served-model-name", model, "--max-model-len", str(length),
                "--gpu-memory-utilization", f"{util:g}", "--host", "127.0.0.1", "--port",
                str(port), *extra]
    return [sys.executable, "-m", "gpu_stack_runtime.launcher", "head", "--model-dir",
            model_dir, "--served-model-name", model, "--max-model-len", str(length),
            "--gpu-memory-utilization", f"{util:g}", "--host", "127.0.0.1", "--port",
            str(port), "--api-key-file", str(key_file), "--num-gpus", "1",
            "--ray-port", str(6390 + index), "--ray-arg=--include-dashboard=false",
            "--gpu-timeout", "120", "--progress-interval", "5", "--stop-grace", "20",
            "--", *extra]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(45)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    subprocess.run("ray stop --force >/dev/null 2>&1", shell=True, timeout=60, check=False)
    for _attempt in range(30):  # the next run profiles the free memory: wait until freed
        used = _sh("nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits")
        if used.isdigit() and int(used) < 1024:
            return
        time.sleep(1)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> float:
    """Seconds until ``url`` answers 200 (also gateway.py's wait); fails when ``proc``
    exits first or ``timeout`` passes."""
    import httpx2

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before {url}")
        try:
            if httpx2.get(url, timeout=2).status_code == 200:
                return round(time.monotonic() - start, 1)
        except httpx2.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"no 200 from {url} within {timeout:g} s")


def _load(ep, rounds: int) -> list[dict]:
    endpoint.run_load(ep, requests=32, concurrency=32, prompt=PROMPT, max_tokens=32,
                      ignore_eos=True)  # warm-up
    reports = []
    for _round in range(rounds):
        records, started, finished, duration = endpoint.run_load(
            ep, requests=LOAD["requests"], concurrency=LOAD["concurrency"], prompt=PROMPT,
            max_tokens=LOAD["max_tokens"], ignore_eos=True)
        report = loadtest.build_report(records, dict(LOAD), started, finished, duration)
        reports.append(loadtest.summary(report))
    return reports


def run_one(index: int, spec: tuple, logs: Path, key: str, key_file: Path,
            time_left: float) -> dict:
    model, length, util, mode, measured_load = spec
    port = 8100 + index
    log_path = logs / f"{index:02d}-{model}-{mode}-{length}-{util:g}.log"
    cmd = _command(model, length, util, mode, port, key_file, index)
    result = {"index": index, "model": model, "max_model_len": length,
              "gpu_memory_utilization": util, "mode": mode,
              "executor": "ray" if mode == "launcher" else "uni (vLLM default, 1 GPU)",
              "command": cmd, "log": log_path.name}
    api_key = key if mode == "launcher" else None
    ep = endpoint.Endpoint(base_url=f"http://127.0.0.1:{port}", model=model,
                           api_key=api_key, timeout=120.0)
    t0 = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        result["startup_s"] = wait_ready(f"{ep.base_url}/health", proc,
                                         min(300.0, time_left - 60))
        result["smoke"] = endpoint.smoke_test(ep, PROMPT, max_tokens=16, wait_timeout=30)
        result["smoke_ok"] = all(c.get("ok") for c in result["smoke"]["checks"])
        result["load"] = _load(ep, LOAD["rounds"] if measured_load else 1)
    except Exception as exc:  # recorded; the next run still goes
        result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        _stop(proc)
    text = log_path.read_text(errors="replace")
    result["measured"] = vllm_log.parse(text)
    result["log_lines"] = vllm_log.key_lines(text)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", choices=sorted(SETS), required=True)
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu-check-out"))
    parser.add_argument("--budget-s", type=float, default=560.0)
    args = parser.parse_args()
    began = time.monotonic()
    out = Path(args.out)
    logs = Path("/tmp/gpu-check-logs") / args.set
    logs.mkdir(parents=True, exist_ok=True)
    key = f"gpu-check-{time.time_ns()}"
    key_file = logs / "api-key"
    key_file.write_text(key + "\n")
    doc = {"set": args.set, "device": device_facts(), "load_settings": LOAD, "runs": []}
    target = out / f"runs-{args.set}.json"
    for index, spec in enumerate(SETS[args.set]):
        left = args.budget_s - (time.monotonic() - began)
        if left < RUN_SECONDS:
            doc["runs"].append({"model": spec[0], "max_model_len": spec[1],
                                "gpu_memory_utilization": spec[2], "mode": spec[3],
                                "skipped": f"{left:.0f} s left in this call"})
            continue
        result = run_one(index, spec, logs, key, key_file, left)
        doc["runs"].append(result)
        print(json.dumps({k: result.get(k) for k in
                          ("model", "mode", "max_model_len", "gpu_memory_utilization",
                           "startup_s", "smoke_ok", "measured", "error")}), flush=True)
        target.write_text(json.dumps(doc, indent=1))
    target.write_text(json.dumps(doc, indent=1))
    with tarfile.open(out / f"logs-{args.set}.tar.gz", "w:gz") as tar:
        tar.add(logs, arcname=f"logs-{args.set}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
