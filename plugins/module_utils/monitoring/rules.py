# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The alert rules (one PrometheusRule), each with a runbook in its annotations.

Metric names are the ones the pinned vLLM exports (``vllm/v1/metrics/loggers.py``:
``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc`` (a fraction),
``vllm:time_to_first_token_seconds``; its HTTP layer's ``http_requests_total`` with
``status`` grouped as ``2xx``/``4xx``/``5xx``), kube-state-metrics' restart counter,
and the DCGM exporter's default counters (``DCGM_FI_DEV_XID_ERRORS``: the last Xid seen;
``DCGM_FI_DEV_FB_USED``/``_FREE`` in MiB; ``DCGM_FI_DEV_GPU_TEMP``,
``DCGM_FI_DEV_MEMORY_TEMP`` in C; ``Hostname`` is the node).

vLLM series are those of the servers' ServiceMonitors: the Prometheus Operator labels
them with ``namespace`` and ``service`` (``<name>-metrics``), which the selector uses.
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)

# threshold -> (default, lower bound, upper bound); the role's defaults say the same.
THRESHOLDS = {
    "queue_waiting_requests": (20, 1, None),
    "kv_cache_usage": (0.95, 0.0, 1.0),
    "ttft_p95_seconds": (2.0, 0.0, None),
    "error_rate": (0.05, 0.0, 1.0),
    "restarts_15m": (1, 1, None),
    "gpu_memory_used": (0.98, 0.0, 1.0),
    "gpu_temperature_celsius": (85, 0, None),
    "gpu_memory_temperature_celsius": (95, 0, None),
}
XID_FALLEN_OFF_BUS = 79


def thresholds(given: dict | None) -> dict:
    """The defaults with ``given`` over them; unknown names and bad values refused."""
    given = given or {}
    unknown = sorted(set(given) - set(THRESHOLDS))
    if unknown:
        raise InvalidInputError(f"unknown alert thresholds: {', '.join(unknown)}; known: "
                                f"{', '.join(THRESHOLDS)}")
    out = {}
    for key, (default, low, high) in THRESHOLDS.items():
        value = given.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInputError(f"alert threshold {key}: {value!r} is not a number")
        if value < low or (high is not None and value > high):
            raise InvalidInputError(f"alert threshold {key}: {value} is outside "
                                    f"[{low}, {high if high is not None else 'inf'}]")
        out[key] = value
    return out


def _alert(name: str, expr: str, duration: str, severity: str, summary: str,
           description: str, runbook: str) -> dict:
    rule = {"alert": name, "expr": expr, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description,
                            "runbook": runbook}}
    if duration != "0m":
        rule["for"] = duration
    return rule


def _regex(values: list) -> str:
    return "|".join(sorted(set(values)))


def vllm_selector(servers: list) -> str:
    """The label matchers of the servers' scraped series."""
    return (f'namespace=~"{_regex([s["namespace"] for s in servers])}",'
            f'service=~"{_regex([s["name"] + "-metrics" for s in servers])}"')


def _vllm_rules(servers: list, t: dict) -> list[dict]:
    sel = vllm_selector(servers)
    pods = (f'namespace=~"{_regex([s["namespace"] for s in servers])}",'
            f'pod=~"({_regex([s["name"] for s in servers])})-.*"')
    where = "{{ $labels.namespace }}/{{ $labels.service }}"
    return [
        _alert("VllmRequestQueueGrowing",
               f"vllm:num_requests_waiting{{{sel}}} > {t['queue_waiting_requests']}\n"
               f"and delta(vllm:num_requests_waiting{{{sel}}}[10m]) > 0",
               "5m", "warning", "vLLM's waiting queue is long and growing",
               f"{where} ({{{{ $labels.pod }}}}) has {{{{ $value }}}} requests waiting "
               f"(threshold {t['queue_waiting_requests']}), more than 10 minutes ago.",
               "Requests arrive faster than the server finishes them. Check the KV-cache "
               "usage and preemptions (vllm:num_preemptions_total) on the dashboard: a full "
               "cache limits the running batch. Add replicas (serving_plan replicas or a "
               "bigger GPU share), lower max_tokens at the clients, or shed load at the "
               "gateway. A queue that grows while nothing runs means a stuck engine: "
               "restart the pod."),
        _alert("VllmKvCacheNearlyFull",
               f"vllm:kv_cache_usage_perc{{{sel}}} > {t['kv_cache_usage']}",
               "10m", "warning", "vLLM's KV cache is nearly full",
               f"{where} ({{{{ $labels.pod }}}}) uses {{{{ $value | humanizePercentage }}}} of "
               f"its KV cache (threshold {t['kv_cache_usage']}).",
               "New requests wait and running ones get preempted (recomputed) when the "
               "cache is full. Shorten the context (max_model_len), raise "
               "gpu_memory_utilization if the GPU has room, or serve the model with more "
               "tensor parallelism or more replicas (re-plan with serving_plan)."),
        _alert("VllmHighTimeToFirstToken",
               "histogram_quantile(0.95, sum by (le, namespace, service, model_name) "
               f"(rate(vllm:time_to_first_token_seconds_bucket{{{sel}}}[5m])))"
               f" > {t['ttft_p95_seconds']}",
               "10m", "warning", "vLLM's time to first token is high",
               f"95th percentile time to first token of {where} is {{{{ $value | "
               f"humanizeDuration }}}} (threshold {t['ttft_p95_seconds']} s).",
               "Prefill waits behind the queue or competes with decoding. Check the "
               "waiting queue and KV-cache panels; long prompts raise it too (the prompt "
               "length histogram). Add replicas, enable chunked prefill, or lower "
               "max_num_batched_tokens contention by spreading load."),
        _alert("VllmHighErrorRate",
               "sum by (namespace, service) "
               f'(rate(http_requests_total{{{sel},status="5xx"}}[5m]))\n'
               f"/ sum by (namespace, service) (rate(http_requests_total{{{sel}}}[5m]))"
               f" > {t['error_rate']}",
               "5m", "critical", "vLLM answers many requests with server errors",
               f"{{{{ $value | humanizePercentage }}}} of the requests to {where} failed "
               f"with 5xx in the last 5 minutes (threshold {t['error_rate']}).",
               "Read the head pod's log (the launcher's and vLLM's lines) for the failing "
               "requests. Engine errors after a GPU fault show with a GPU Xid alert; "
               "out-of-memory errors need a smaller batch or context. The smoke test "
               "(playbooks/validate.yml) checks the endpoint end to end."),
        _alert("ServingPodRestarting",
               f"increase(kube_pod_container_status_restarts_total{{{pods}}}[15m])"
               f" >= {t['restarts_15m']}",
               "0m", "warning", "A serving pod restarts",
               "{{ $labels.namespace }}/{{ $labels.pod }} ({{ $labels.container }}) restarted "
               "{{ printf \"%.0f\" $value }} times in 15 minutes.",
               "Read the previous container's log (oc logs --previous). The launcher's exit "
               "code says why (contract.py: weights missing, GPUs not joined, vLLM "
               "failed); an OOMKilled state needs more memory in head_resources or "
               "worker_resources; a GPU Xid alert on the same node points at the GPU."),
    ]


def _gpu_rules(t: dict) -> list[dict]:
    gpu = "{{ $labels.Hostname }} GPU {{ $labels.gpu }} ({{ $labels.UUID }})"
    return [
        _alert("GpuXidError", f"DCGM_FI_DEV_XID_ERRORS > 0 unless DCGM_FI_DEV_XID_ERRORS == "
               f"{XID_FALLEN_OFF_BUS}",
               "0m", "warning", "A GPU reported an Xid error",
               f"{gpu} reported Xid {{{{ $value }}}}.",
               "Look the Xid up in NVIDIA's Xid catalogue. 13, 31, 43 and 45 usually come "
               "from the application (restart the pod); 48, 63, 64, 74, 92, 94 and 95 "
               "point at memory or NVLink faults: drain the node (oc adm drain), run the "
               "GPU Operator's validator and open a case if it repeats."),
        _alert("GpuFallenOffTheBus", f"DCGM_FI_DEV_XID_ERRORS == {XID_FALLEN_OFF_BUS}",
               "0m", "critical", "A GPU has fallen off the bus",
               f"{gpu} reported Xid {XID_FALLEN_OFF_BUS}: the GPU no longer answers on PCIe.",
               "The GPU is gone until the host is power-cycled: cordon and drain the node, "
               "power-cycle the ESXi host (a VM reboot is not enough for a passthrough "
               "GPU), check the host's hardware log, and have it replaced if it repeats."),
        _alert("GpuMissingFromNode",
               "count by (Hostname) (DCGM_FI_DEV_GPU_TEMP offset 30m)\n"
               "- count by (Hostname) (DCGM_FI_DEV_GPU_TEMP) > 0",
               "5m", "critical", "A node reports fewer GPUs than 30 minutes ago",
               "{{ $labels.Hostname }} reports {{ $value }} GPUs fewer than 30 minutes ago "
               "(a GPU fell off the bus or its driver lost it).",
               "Run nvidia-smi in the node's driver pod. A missing GPU needs the host "
               "power-cycled (see GpuFallenOffTheBus); the node's nvidia.com/gpu "
               "allocatable drops and pods of a multi-node model stay pending."),
        _alert("GpuMemoryNearlyFull",
               "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)"
               f" > {t['gpu_memory_used']}",
               "15m", "warning", "GPU memory is nearly full",
               f"{gpu} uses {{{{ $value | humanizePercentage }}}} of its memory "
               f"(threshold {t['gpu_memory_used']}).",
               "vLLM takes gpu_memory_utilization of the GPU at start (0.9 by default): "
               "more than that means another process shares the GPU. Find it with "
               "nvidia-smi in the node's driver pod; lower gpu_memory_utilization if "
               "vLLM itself runs out of memory."),
        _alert("GpuTemperatureHigh",
               f"DCGM_FI_DEV_GPU_TEMP > {t['gpu_temperature_celsius']}",
               "5m", "warning", "A GPU runs hot",
               f"{gpu} is at {{{{ $value }}}} C (threshold {t['gpu_temperature_celsius']} C).",
               "A hot GPU slows its clocks (throughput drops). Check the host's fans and "
               "airflow and the ESXi host's hardware health; move load off the node if it "
               "keeps rising."),
        _alert("GpuMemoryTemperatureHigh",
               f"DCGM_FI_DEV_MEMORY_TEMP > {t['gpu_memory_temperature_celsius']}",
               "5m", "warning", "A GPU's memory runs hot",
               f"{gpu} memory is at {{{{ $value }}}} C "
               f"(threshold {t['gpu_memory_temperature_celsius']} C).",
               "HBM throttles and then faults when too hot: check the host's cooling and "
               "move load off the node until it cools down."),
    ]


def groups(servers: list, given: dict | None) -> list[dict]:
    """The rule groups: vLLM (when there are servers) and GPU."""
    t = thresholds(given)
    out = []
    if servers:
        out.append({"name": "llmops-gpu-stack.vllm", "rules": _vllm_rules(servers, t)})
    out.append({"name": "llmops-gpu-stack.gpu", "rules": _gpu_rules(t)})
    return out


def prometheus_rule(name: str, namespace: str, servers: list, given: dict | None,
                    labels: dict) -> dict:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "llmops-gpu-stack", **labels}},
            "spec": {"groups": groups(servers, given)}}
