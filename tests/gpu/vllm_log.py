"""Read vLLM 0.24's start-up log: the memory figures it measured on the GPU.

Lines (``vllm/v1/worker/gpu_model_runner.py``, ``gpu_worker.py``,
``v1/core/kv_cache_utils.py``); with the Ray executor the worker's lines come prefixed
with ``(RayWorkerWrapper pid=...)``, which the patterns ignore.
"""

from __future__ import annotations

import re

_PATTERNS = {
    "weights_gib": r"Model loading took ([\d.]+) GiB",
    "kv_cache_gib": r"Available KV cache memory: ([\d.]+) GiB",
    "kv_cache_tokens": r"GPU KV cache size: ([\d,]+) tokens",
    "max_concurrency": r"Maximum concurrency for [\d,]+ tokens per request: ([\d.]+)x",
    "graph_capture_gib": r"Graph capturing finished in \d+ secs, took ([\d.]+) GiB",
    "max_num_batched_tokens": r"max_num_batched_tokens=(\d+)",
}
_INTS = ("kv_cache_tokens", "max_num_batched_tokens")
_USAGE = re.compile(
    r"Free memory on device \(([\d.]+)/([\d.]+) GiB\) on startup\. Desired GPU memory "
    r"utilization is \(([\d.]+), ([\d.]+) GiB\)\. Actual usage is ([\d.]+) GiB for weight, "
    r"([\d.]+) GiB for peak activation, ([\d.]+) GiB for non-torch memory, and ([\d.]+) "
    r"GiB for CUDAGraph memory")
_USAGE_KEYS = ("free_at_start_gib", "total_gib", "utilization", "requested_gib",
               "usage_weights_gib", "peak_activation_gib", "non_torch_gib", "cudagraph_gib")
_KEEP = re.compile(r"Model loading took|KV cache|Free memory on device|Graph capturing|"
                   r"Maximum concurrency|CUDA graph memory|backend|max_num_batched_tokens|"
                   r"Traceback|Error")


def parse(text: str) -> dict:
    """The measured figures found in ``text`` (floats; token counts as int)."""
    found: dict = {}
    for key, pattern in _PATTERNS.items():
        match = re.search(pattern, text)
        if match:
            value = match.group(1).replace(",", "")
            found[key] = int(value) if key in _INTS else float(value)
    match = _USAGE.search(text)
    if match:
        found.update({k: float(v) for k, v in zip(_USAGE_KEYS, match.groups(), strict=True)})
    return found


def key_lines(text: str, most: int = 40) -> list[str]:
    """The log lines the figures come from (and errors), for the results file."""
    lines = [line.strip()[:400] for line in text.splitlines() if _KEEP.search(line)]
    return lines[-most:]
