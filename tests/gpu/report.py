"""Turn the device's runs-*.json into the committed results file and its table.

``python tests/gpu/report.py DIR [DIR...] --out tests/gpu/results/h100-DATE``
reads every ``runs-*.json`` under the given directories (what the device calls
returned), adds the planner's prediction for each run (``serving/memory.py`` through
``model_from_options({"config_path": ...})``, as a user's ``config.json`` would go),
computed here on the controller with the GPU memory vLLM itself saw
(``torch.cuda.mem_get_info`` total), and writes ``OUT.json`` and ``OUT.md``.
Errors are ``(predicted - measured) / measured`` in %.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common import (  # noqa: E402
    versions,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import (  # noqa: E402
    memory,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.model import (  # noqa: E402
    model_from_options,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.presets import (  # noqa: E402
    PRESETS,
)

MODELS = ROOT / ".cache" / "gpu" / "models"
GIB = 2**30


def _scrub(lines: list[str] | None) -> list[str]:
    """Log lines without the device's paths (checkout, interpreter)."""
    out = []
    for line in lines or []:
        line = re.sub(r"/\S*?/\.cache/gpu/", ".cache/gpu/", line)
        out.append(re.sub(r"/\S*/bin/python3?\b", "python3", line))
    return out


def _error(predicted, measured):
    if predicted is None or not measured:
        return None
    return round((predicted - measured) / measured * 100, 2)


def predict(run: dict, gpu_memory_gib: float) -> dict:
    """The planner's figures for one run: the batched tokens it assumes when the user sets
    none (``DEFAULT_BATCHED_TOKENS``, as ``planner.py`` passes them), and, beside them,
    the KV tokens with the batched tokens vLLM logged it used."""
    model, _warnings = model_from_options(
        {"config_path": str(MODELS / run["model"] / "config.json"),
         "max_model_len": run["max_model_len"]}, PRESETS)

    def _stage(batched):
        return memory.replica_memory(
            model, 1, 1, gpu_memory_gib=gpu_memory_gib,
            utilization=run["gpu_memory_utilization"], kv_bytes=model.dense_bytes_per_param,
            batched_tokens=batched)[0]

    stage = _stage(memory.DEFAULT_BATCHED_TOKENS)
    used = run.get("measured", {}).get("max_num_batched_tokens")
    return {"gpu_memory_gib": round(gpu_memory_gib, 2),
            "batched_tokens": memory.DEFAULT_BATCHED_TOKENS,
            "weights_gib": round(stage.weights_gib, 3),
            "overhead_gib": round(stage.overhead_gib, 3),
            "kv_cache_gib": round(stage.kv_cache_gib, 3),
            "kv_cache_tokens": stage.kv_capacity_tokens,
            "kv_cache_tokens_at_vllm_batched_tokens": (
                _stage(used).kv_capacity_tokens if used else None),
            "vllm_batched_tokens": used}


def _load_line(run: dict) -> dict:
    loads = run.get("load") or []
    if not loads:
        return {}
    best = max(loads, key=lambda r: r["output_tokens_per_s"])
    return {"output_tokens_per_s": [r["output_tokens_per_s"] for r in loads],
            "best_output_tokens_per_s": best["output_tokens_per_s"],
            "ttft_p50_ms": best["ttft_ms"]["p50"], "ttft_p95_ms": best["ttft_ms"]["p95"],
            "errors": sum(r["counts"]["failed"] for r in loads)}


def build(docs: list[dict]) -> dict:
    device = docs[0]["device"]
    gpu_gib = device["mem_get_info_total_bytes"] / GIB
    runs = []
    for doc in docs:
        for run in doc["runs"]:
            keys = ("model", "mode", "executor", "max_model_len", "gpu_memory_utilization",
                    "startup_s", "smoke_ok", "error", "skipped", "measured", "log_lines")
            entry = {k: run.get(k) for k in keys}
            entry["set"] = doc["set"]
            entry["log_lines"] = _scrub(entry["log_lines"])
            entry["smoke_checks"] = [c["name"] for c in (run.get("smoke") or {}).get("checks", [])
                                     if c.get("ok")]
            entry["load"] = _load_line(run)
            if run.get("measured", {}).get("kv_cache_tokens"):
                pred = predict(run, gpu_gib)
                meas = run["measured"]
                entry["planner"] = pred
                entry["error_pct"] = {
                    "weights": _error(pred["weights_gib"], meas.get("weights_gib")),
                    "kv_cache_gib": _error(pred["kv_cache_gib"], meas.get("kv_cache_gib")),
                    "kv_cache_tokens": _error(pred["kv_cache_tokens"],
                                              meas.get("kv_cache_tokens")),
                    "kv_cache_tokens_at_vllm_batched_tokens": _error(
                        pred["kv_cache_tokens_at_vllm_batched_tokens"],
                        meas.get("kv_cache_tokens")),
                }
            runs.append(entry)
    return {"device": device, "vllm_images_pin": versions.VLLM,
            "load_settings": docs[0]["load_settings"], "runs": runs,
            "throughput": _throughput(runs)}


def _throughput(runs: list[dict]) -> list[dict]:
    """Launcher (Ray executor) against plain vLLM, same model and settings, same call."""
    pairs = []
    for ours in runs:
        if ours["mode"] != "launcher" or not ours["load"]:
            continue
        for plain in runs:
            if (plain["mode"] == "plain" and plain["load"]
                    and all(plain[k] == ours[k] for k in
                            ("model", "max_model_len", "gpu_memory_utilization"))):
                a = ours["load"]["best_output_tokens_per_s"]
                b = plain["load"]["best_output_tokens_per_s"]
                pairs.append({"model": ours["model"], "launcher_tokens_per_s": a,
                              "plain_tokens_per_s": b, "ratio_pct": round(a / b * 100, 1),
                              "meets_98_pct": a >= 0.98 * b,
                              "same_device_call": plain["set"] == ours["set"]})
    return pairs


def markdown(result: dict) -> str:
    d = result["device"]
    lines = [f"# GPU check: {d['gpu']}", "",
             f"driver {d['driver']}, {d['cuda_driver']}, torch {d['torch']} (CUDA "
             f"{d['torch_cuda']}), vLLM {d['vllm']}, Ray {d['ray']}, transformers "
             f"{d['transformers']}; CUDA reports {d['mem_get_info_total_bytes'] / GIB:.2f} GiB. "
             f"The images pin vLLM {result['vllm_images_pin']}.", "",
             "Predictions: `serving/memory.py` as the planner calls it (TP 1, PP 1, the GPU "
             "memory CUDA reports, the planner's default batched tokens "
             f"{memory.DEFAULT_BATCHED_TOKENS}); errors are (predicted - measured) / measured. "
             "Modes: `launcher` = `gpu-stack-launch head` with the Ray executor, `plain` = "
             "`python -m vllm.entrypoints.openai.api_server` (vLLM's single-GPU executor). "
             "vLLM prints the weights with two decimals (the tiny model's 1.3 MB shows as 0.0).",
             "",
             "| model | mode | len | util | smoke | weights GiB meas/pred (err %) | "
             "KV tokens meas/pred (err %) | tok/s | TTFT p50/p95 ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        if r.get("skipped") or "planner" not in r:
            lines.append(f"| {r['model']} | {r['mode']} | {r['max_model_len']} | "
                         f"{r['gpu_memory_utilization']} | not measured: "
                         f"{r.get('skipped') or r.get('error')} |||||")
            continue
        m, p, e, load = r["measured"], r["planner"], r["error_pct"], r["load"]
        tput = f"{load['best_output_tokens_per_s']:.0f}" if load else "-"
        ttft = f"{load['ttft_p50_ms']:.0f}/{load['ttft_p95_ms']:.0f}" if load else "-"
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['max_model_len']} | "
            f"{r['gpu_memory_utilization']} | {'pass' if r['smoke_ok'] else 'FAIL'} | "
            f"{m.get('weights_gib')}/{p['weights_gib']:.2f} ({e['weights']}) | "
            f"{m['kv_cache_tokens']}/{p['kv_cache_tokens']} ({e['kv_cache_tokens']}) | "
            f"{tput} | {ttft} |")
    lines.append("")
    for t in result["throughput"]:
        lines.append(f"- {t['model']}: launcher (Ray executor) {t['launcher_tokens_per_s']:.0f} "
                     f"output tokens/s, plain vLLM {t['plain_tokens_per_s']:.0f}: "
                     f"{t['ratio_pct']} % ({'meets' if t['meets_98_pct'] else 'misses'} 98 %"
                     f"{'' if t['same_device_call'] else '; consecutive calls, same machine'})")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="+")
    parser.add_argument("--out", required=True, help="path without extension")
    args = parser.parse_args(argv)
    docs = [json.loads(p.read_text()) for d in args.dirs for p in sorted(Path(d).glob(
        "runs-*.json"))]
    if not docs:
        parser.error("no runs-*.json found")
    result = build(docs)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
