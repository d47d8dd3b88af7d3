# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The serving plan: the entry point of the layout planner (pure Python, no Ansible).

API
---
``build_plan(model, hardware, targets=None, layout=None, topology=None) -> dict``
    Takes the option dicts of ``llmops.gpu_stack.serving_plan`` (``None`` values mean
    "not given"), validates everything, chooses the layout (``planner.py``) and returns
    a JSON-friendly plan. Raises ``InvalidInputError`` for bad input and for layouts
    that cannot fit. ``replicas`` (the fleet planner's share, ``fleet.py``) serves that
    many replicas of the chosen layout instead of filling the hardware; the idle-GPU
    warning is then the fleet's to give. Inputs: ``model.py`` (model), ``inputs.py`` (the others);
    memory formulas: ``memory.py``; layout rules: ``planner.py``.

The plan (keys)::

    model            name, source, parameters, architecture, dtype, quantization,
                     max_model_len, weights_gib (whole model)
    hardware         nodes, gpus_per_node, total_gpus, gpu_memory_gib (as given),
                     gpu_memory_gib_used (what the plan uses: the memory CUDA reports
                     for a known gpu_model, see ``inputs.py``), gpu_memory_source
                     (which figure and why), gpu_model, nvlink, rdma
    topology         head_without_gpus | head_with_gpus
    tensor_parallel_size, pipeline_parallel_size, replicas,
    gpus_per_replica, nodes_per_replica, gpus_used, gpus_idle
    memory           gpu_memory_utilization, budget_gib, weights_per_gpu_gib (largest
                     stage), kv_cache_per_gpu_gib (smallest stage), per_gpu (one entry
                     per pipeline stage: layers, weights, overhead, KV cache, tokens)
    kv_cache         capacity_tokens (per replica), required_tokens, dtype,
                     bytes_per_token (whole model), max_concurrent_sequences
    vllm_args        list of command-line arguments for ``vllm serve``
    ray_cluster      clusters (one RayCluster per replica), head_gpus, worker_groups
                     [{name, replicas, gpus_per_worker}], pods, gpus_per_cluster
    warnings         list of strings
    summary          readable lines (what the role prints)

Ray cluster shape: with ``head_without_gpus`` the head has 0 GPUs and each node of
a replica runs one worker pod with ``gpus_per_worker`` GPUs. With ``head_with_gpus``
(vLLM runs in the head) the head takes one node's GPUs and counts as one of the
replica's nodes, so workers are the other nodes. A replica that fits one node has one
GPU pod (a worker, or the head).
"""

from __future__ import annotations

import dataclasses

from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.inputs import (
    check_topology,
    hardware_from_options,
    layout_from_options,
    targets_from_options,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.memory import GIB
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.model import (
    model_from_options,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.planner import (
    choose_layout,
    kv_dtype_bytes,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.presets import PRESETS

VLLM_QUANTIZATION_FLAGS = ("awq", "gptq", "fp8")
# Below this share of the per-GPU budget, the KV cache is flagged as a thin margin.
THIN_KV_FRACTION = 0.1


def vllm_args(model, targets, layout) -> list[str]:
    """Command-line arguments for ``vllm serve`` (model path and host/port excluded)."""
    args = [
        "--tensor-parallel-size",
        str(layout.tp),
        "--pipeline-parallel-size",
        str(layout.pp),
    ]
    if layout.nodes_per_replica > 1:
        args += ["--distributed-executor-backend", "ray"]
    args += [
        "--max-model-len",
        str(model.max_model_len),
        "--gpu-memory-utilization",
        f"{targets.gpu_memory_utilization:g}",
        "--dtype",
        model.dtype,
    ]
    if model.quantization in VLLM_QUANTIZATION_FLAGS:
        args += ["--quantization", model.quantization]
    if targets.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", targets.kv_cache_dtype]
    if targets.max_num_batched_tokens:
        args += ["--max-num-batched-tokens", str(targets.max_num_batched_tokens)]
    return args


def ray_cluster_shape(layout, topology: str) -> dict:
    """Head and worker groups of the RayCluster of one replica."""
    pods = layout.nodes_per_replica
    if topology == "head_with_gpus":
        head_gpus, workers = layout.gpus_per_pod, pods - 1
    else:
        head_gpus, workers = 0, pods
    groups = []
    if workers:
        groups.append(
            {"name": "gpu-workers", "replicas": workers, "gpus_per_worker": layout.gpus_per_pod}
        )
    return {
        "clusters": layout.replicas,
        "head_gpus": head_gpus,
        "worker_groups": groups,
        "pods": 1 + workers,
        "gpus_per_cluster": layout.gpus_per_replica,
    }


def _warnings(model, hardware, targets, layout, fleet_share=False) -> list[str]:
    warnings = []
    if layout.tp > hardware.gpus_per_node:
        warnings.append(
            f"tensor parallelism spans nodes (TP {layout.tp} > {hardware.gpus_per_node} GPUs "
            "per node), as forced: every layer all-reduces over the network"
        )
        if not hardware.rdma:
            warnings.append("TP across nodes without RDMA: NCCL falls back to TCP sockets")
    elif layout.tp > 1 and not hardware.nvlink:
        warnings.append(f"TP {layout.tp} inside a node without NVLink: all-reduce runs over PCIe")
    if layout.nodes_per_replica > 1 and not hardware.rdma:
        warnings.append(
            "no RDMA between nodes: pipeline stages pass activations over TCP; expect "
            "higher latency per token than on one node"
        )
    if layout.tp > model.num_kv_heads:
        warnings.append(
            f"TP {layout.tp} exceeds the {model.num_kv_heads} KV heads: vLLM replicates "
            "KV heads, so the KV cache per GPU does not shrink further"
        )
    idle = hardware.total_gpus - layout.replicas * layout.gpus_per_replica
    if idle and not fleet_share:
        warnings.append(
            f"{idle} of {hardware.total_gpus} GPUs stay idle: {layout.replicas} replica(s) of "
            f"{layout.gpus_per_replica} GPUs do not use them all (a larger forced "
            "layout.pipeline_parallel_size would turn them into KV cache)"
        )
    thinnest = min(stage.kv_cache_gib for stage in layout.stages)
    budget = round(targets.gpu_memory_utilization * hardware.gpu_memory_gib, 2)
    if thinnest < THIN_KV_FRACTION * budget:
        warnings.append(
            f"thin margin: {thinnest:.2f} GiB of KV cache per GPU is under "
            f"{THIN_KV_FRACTION:.0%} of the {budget:g} GiB budget; vLLM's own profiling at "
            "start-up may find less (more headroom: raise the KV target or force a larger PP)"
        )
    if model.num_experts > 1:
        warnings.append(
            f"MoE model: all {model.num_experts} experts are held in GPU memory "
            "(no expert parallelism planned)"
        )
    return warnings


def _model_dict(model) -> dict:
    return {
        "name": model.name,
        "source": model.source,
        "parameters": int(model.parameters),
        "parameters_billion": round(model.parameters / 1e9, 2),
        "num_layers": model.num_layers,
        "num_attention_heads": model.num_attention_heads,
        "num_kv_heads": model.num_kv_heads,
        "hidden_size": model.hidden_size,
        "head_dim": model.head_dim,
        "vocab_size": model.vocab_size,
        "intermediate_size": model.intermediate_size,
        "num_experts": model.num_experts,
        "num_experts_per_token": model.num_experts_per_token,
        "dtype": model.dtype,
        "quantization": model.quantization or "none",
        "max_model_len": model.max_model_len,
        "weights_gib": round(
            (
                model.params_per_layer * model.num_layers * model.weight_bytes_per_param
                + (model.embedding_params + model.lm_head_params) * model.dense_bytes_per_param
            )
            / GIB,
            2,
        ),
    }


def _summary(plan: dict) -> list[str]:
    mem, kv, ray = plan["memory"], plan["kv_cache"], plan["ray_cluster"]
    hw, model = plan["hardware"], plan["model"]
    workers = ", ".join(
        f"{g['replicas']} x {g['gpus_per_worker']} GPU" for g in ray["worker_groups"]
    )
    lines = [
        f"model: {model['name']} ({model['parameters_billion']}B, {model['dtype']}, "
        f"quantization {model['quantization']}, max_model_len {model['max_model_len']})",
        f"hardware: {hw['nodes']} nodes x {hw['gpus_per_node']} GPUs x "
        f"{hw['gpu_memory_gib_used']:g} GiB, memory {hw['gpu_memory_source']}",
        f"layout: TP {plan['tensor_parallel_size']} x PP {plan['pipeline_parallel_size']} x "
        f"{plan['replicas']} replicas ({plan['gpus_used']} of {hw['total_gpus']} GPUs)",
        f"per GPU: weights {mem['weights_per_gpu_gib']} GiB, KV cache "
        f"{mem['kv_cache_per_gpu_gib']} GiB of {mem['budget_gib']} GiB budget",
        f"KV capacity: {kv['capacity_tokens']} tokens per replica "
        f"({kv['max_concurrent_sequences']} x {model['max_model_len']}-token sequences; "
        f"required {kv['required_tokens']})",
        f"ray: {ray['clusters']} cluster(s), head {ray['head_gpus']} GPU, "
        f"workers {workers or 'none'} ({plan['topology']})",
        "vllm: " + " ".join(plan["vllm_args"]),
    ]
    lines += [f"warning: {warning}" for warning in plan["warnings"]]
    return lines


def build_plan(model, hardware, targets=None, layout=None, topology=None, replicas=None) -> dict:
    """Validate the option dicts and return the serving plan (see the module docstring)."""
    spec, warnings = model_from_options(model, PRESETS)
    hw = hardware_from_options(hardware)
    goals = targets_from_options(targets, spec.max_model_len)
    request = layout_from_options(layout)
    topology = check_topology(topology)
    chosen = choose_layout(spec, hw, goals, request)
    if replicas is not None:
        chosen = dataclasses.replace(chosen, replicas=replicas)
    stages = chosen.stages
    kv_total = 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim
    plan = {
        "model": _model_dict(spec),
        "hardware": {
            "nodes": hw.nodes,
            "gpus_per_node": hw.gpus_per_node,
            "total_gpus": hw.total_gpus,
            "gpu_memory_gib": hw.gpu_memory_given,
            "gpu_memory_gib_used": round(hw.gpu_memory_gib, 2),
            "gpu_memory_source": hw.gpu_memory_source,
            "gpu_model": hw.gpu_model,
            "nvlink": hw.nvlink,
            "rdma": hw.rdma,
        },
        "topology": topology,
        "tensor_parallel_size": chosen.tp,
        "pipeline_parallel_size": chosen.pp,
        "replicas": chosen.replicas,
        "gpus_per_replica": chosen.gpus_per_replica,
        "nodes_per_replica": chosen.nodes_per_replica,
        "gpus_used": chosen.replicas * chosen.gpus_per_replica,
        "gpus_idle": hw.total_gpus - chosen.replicas * chosen.gpus_per_replica,
        "memory": {
            "gpu_memory_utilization": goals.gpu_memory_utilization,
            "budget_gib": round(stages[0].budget_gib, 2),
            "weights_per_gpu_gib": round(max(s.weights_gib for s in stages), 2),
            "kv_cache_per_gpu_gib": round(min(s.kv_cache_gib for s in stages), 2),
            "per_gpu": [stage.as_dict() for stage in stages],
        },
        "kv_cache": {
            "capacity_tokens": chosen.kv_capacity_tokens,
            "required_tokens": goals.required_kv_tokens,
            "dtype": "fp8" if goals.kv_cache_dtype == "fp8" else spec.dtype,
            "bytes_per_token": int(kv_total * kv_dtype_bytes(spec, goals)),
            "max_concurrent_sequences": chosen.kv_capacity_tokens // spec.max_model_len,
        },
        "vllm_args": vllm_args(spec, goals, chosen),
        "ray_cluster": ray_cluster_shape(chosen, topology),
        "warnings": warnings + _warnings(spec, hw, goals, chosen, replicas is not None),
    }
    plan["summary"] = _summary(plan)
    return plan
