"""On the GPU machine: the gateway's cost where vLLM has a GPU and the gateway its own cores.

Started by ``device.sh gateway`` (which unpacks the carried packages: vLLM's site and the
gateway's LiteLLM site). It

1. serves Llama 3 8B (``--load-format dummy``, ``.cache/gpu/models/llama-3-8b``) with
   plain vLLM on the GPU, its API key from the environment, on CPUs 0-7;
2. writes LiteLLM's configuration with the collection's own generator
   (``plugins/module_utils/gateway/config.py``, from a hand-over as the serving stage
   writes it) and starts LiteLLM's proxy with the environment the gateway's pod gets
   (``render._STATIC_ENV``, the master key, the backend's URL and key) and the image's
   key check (``gpu_stack_runtime.gateway.auth``), on CPUs 8-11, its own site first
   (LiteLLM pins its own openai and pydantic: it never shares vLLM's);
3. runs ``tests/benchmarks/bench_gateway.py --direct ... --through ...`` on CPUs 12-15,
   once per API of ``--apis`` (streamed completions, chats or both, against the same
   gateway): paired rounds, the same open load straight and through the gateway at
   once, with a straight-vs-straight control, and prints stream output tokens/s and
   TTFT p50 against the targets (>= 0.95, <= 10 ms);
4. writes ``$OUT/gateway-bench.json`` (device facts, settings, the benchmark's output)
   and the two servers' log tails.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import MODELS, _collection_path, _sh, _stop, device_facts, wait_ready  # noqa: E402

sys.path.insert(0, _collection_path())
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gateway import (  # noqa: E402
    config as gw_config,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gateway import (  # noqa: E402
    render as gw_render,
)

VLLM_PORT, GATEWAY_PORT = 8100, 4000


def _cpus(spec: str) -> list[str]:
    """A CPU set for a process (vLLM 0-7, the gateway 8-11, the clients 12-15)."""
    return ["taskset", "-c", spec] if shutil.which("taskset") and os.cpu_count() >= 16 else []


def _gateway_files(work: Path, model: str, key: str, master: str) -> tuple[Path, dict]:
    """LiteLLM's config (the collection's generator) and the pod's environment."""
    handover = {"metadata": {"name": "bench", "namespace": "bench"},
                "data": {"served_model_name": model, "namespace": "bench",
                         "service": "bench", "api_key_secret": "bench-api-key"}}
    backend = gw_config.backend(handover)
    path = work / "config.yaml"
    path.write_text(gw_config.config_text(gw_config.litellm_config([backend])))
    env = {item["name"]: item["value"] for item in gw_render._STATIC_ENV}
    env[backend["key_env"]] = key
    for replica in backend["replicas"]:
        env[replica["env"]] = f"http://127.0.0.1:{VLLM_PORT}/v1"
    env[gw_config.MASTER_KEY_ENV] = master
    return path, env


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu-check-out"))
    parser.add_argument("--gw-site", required=True, help="the unpacked LiteLLM site")
    parser.add_argument("--model", default="llama-3-8b")
    parser.add_argument("--workers", default="1", type=lambda v: [int(w) for w in v.split(",")],
                        help="LiteLLM's --num_workers, one run each (e.g. 1,4)")
    parser.add_argument("--budget-s", type=float, default=560.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--rate", type=float, default=2.5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--apis", default="completions",
                        type=lambda v: [a for a in v.split(",") if a],
                        help="what the load streams, one benchmark each against the same "
                             "gateway: completions, chat or both (completions,chat)")
    args = parser.parse_args()
    began = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/gpu-gateway")
    work.mkdir(parents=True, exist_ok=True)
    key, master = f"bench-{secrets.token_hex(8)}", f"sk-{secrets.token_hex(16)}"
    doc: dict = {"device": device_facts(), "settings": vars(args)}
    vllm_env = {**os.environ, "VLLM_API_KEY": key}
    vllm_cmd = [*_cpus("0-7"), sys.executable, "-m",
                "vllm.entrypoints.openai.api_server", "--model", str(MODELS / args.model),
                "--served-model-name", args.model, "--max-model-len", "4096",
                "--gpu-memory-utilization", "0.9", "--host", "127.0.0.1", "--port",
                str(VLLM_PORT), "--load-format", "dummy"]
    config_path, gw_env = _gateway_files(work, args.model, key, master)
    gw_env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **gw_env,
              "PYTHONPATH": f"{args.gw_site}:{ROOT / 'images' / 'runtime'}"}
    vllm_log = work / "vllm.log"
    with vllm_log.open("w") as log:
        vllm = subprocess.Popen(vllm_cmd, cwd=ROOT, env=vllm_env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    doc["runs"] = []
    try:
        doc["vllm_startup_s"] = wait_ready(f"http://127.0.0.1:{VLLM_PORT}/health", vllm, 300)
        for workers in args.workers:
            if args.budget_s - (time.monotonic() - began) < 200:
                doc["runs"].append({"workers": workers, "skipped": "no time left"})
                continue
            doc["runs"].append(_run_gateway(args, work, out, workers, config_path, gw_env,
                                            key, master))
            _write(out, doc, key, master)
    except Exception as exc:  # recorded with the logs below
        doc["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        print(doc["error"], flush=True)
    finally:
        _stop(vllm)
    doc["litellm"] = _sh(f"PYTHONPATH={args.gw_site} {sys.executable} -c "
                         "'import importlib.metadata as m; print(m.version(\"litellm\"))'")
    text = vllm_log.read_text(errors="replace") if vllm_log.exists() else ""
    (out / "vllm.log.tail").write_text(text[-20000:])
    _write(out, doc, key, master)
    return 0 if doc["runs"] and all(r.get("bench_rc") == 0 for r in doc["runs"]) else 1


def _redact(text: str, key: str, master: str) -> str:
    return text.replace(key, "<key>").replace(master, "<master key>")


def _write(out: Path, doc: dict, key: str, master: str) -> None:
    (out / "gateway-bench.json").write_text(_redact(json.dumps(doc, indent=1), key, master))


def _run_gateway(args, work: Path, out: Path, workers: int, config_path: Path, gw_env: dict,
                 key: str, master: str) -> dict:
    """One gateway (LiteLLM with ``workers`` processes) measured against vLLM straight."""
    gw_cmd = [*_cpus("8-11"), sys.executable, "-c",
              "import sys; from litellm import run_server; sys.argv[0] = 'litellm'; "
              "sys.exit(run_server())", "--config", str(config_path), "--host", "127.0.0.1",
              "--port", str(GATEWAY_PORT), "--num_workers", str(workers)]
    log_path = work / f"gateway-{workers}.log"
    run: dict = {"workers": workers}
    with log_path.open("w") as log:
        proc = subprocess.Popen(gw_cmd, cwd=ROOT, env=gw_env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        run["gateway_startup_s"] = wait_ready(
            f"http://127.0.0.1:{GATEWAY_PORT}/health/readiness", proc, 120)
        run["apis"] = {}
        for api in args.apis:
            bench = subprocess.run(
                [*_cpus("12-15"), sys.executable,
                 str(ROOT / "tests" / "benchmarks" / "bench_gateway.py"),
                 "--direct", f"http://127.0.0.1:{VLLM_PORT}",
                 "--through", f"http://127.0.0.1:{GATEWAY_PORT}", "--model", args.model,
                 "--rounds", str(args.rounds), "--requests", str(args.requests),
                 "--rate", f"{args.rate:g}", "--max-tokens", str(args.max_tokens),
                 "--api", api],
                cwd=ROOT, env={**os.environ, "BENCH_DIRECT_KEY": key,
                               "BENCH_GATEWAY_KEY": master},
                capture_output=True, text=True, timeout=420, check=False)
            run["apis"][api] = {"bench_rc": bench.returncode, "bench_output": bench.stdout,
                                "bench_stderr_tail": bench.stderr[-3000:]}
            print(f"--- LiteLLM with {workers} worker(s), {api}", bench.stdout,
                  bench.stderr[-3000:], sep="\n", flush=True)
        run["bench_rc"] = max(r["bench_rc"] for r in run["apis"].values())
    except Exception as exc:  # recorded; the next variant still runs
        run["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        _stop(proc)
    text = log_path.read_text(errors="replace")
    (out / f"gateway-{workers}.log.tail").write_text(_redact(text[-20000:], key, master))
    return run


if __name__ == "__main__":
    sys.exit(main())
