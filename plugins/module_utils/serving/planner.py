# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Choose the serving layout: tensor parallel x pipeline parallel x replicas.

API
---
``choose_layout(model, hardware, targets, request) -> Layout``
    The smallest layout that fits, or ``InvalidInputError`` saying what does not fit
    and by how much. ``Layout`` holds ``tp``, ``pp``, the placement
    (``nodes_per_replica``, ``gpus_per_pod``, ``replicas``) and the per-stage memory.

Rules
-----
- TP stays inside a node: it must divide the GPUs per node. TP across nodes only when
  forced (``layout.tensor_parallel_size``) with ``layout.allow_cross_node_tp``; it then
  takes whole nodes (a multiple of the GPUs per node).
- TP must divide the attention heads, and the KV heads must split evenly: TP divides
  the KV heads, or the KV heads divide TP (vLLM then replicates each KV head).
- PP is at most the number of layers, and is > 1 only when a replica spans nodes:
  one stage per node, so PP = the nodes a replica spans and TP = the GPUs it uses on
  each (vLLM's guidance: TP inside a node, PP across nodes). A node's free GPUs hold
  further replicas of the same shape. Only a forced ``layout.pipeline_parallel_size``
  may put several stages on one node (they then fill whole nodes: PP a multiple of
  GPUs per node / TP once a replica needs more than one node).
- A layout fits when, on every GPU of every stage, weights + overhead stay within
  ``gpu_memory_utilization x gpu_memory`` and the KV cache holds the required tokens
  (see ``memory.py``); ``gpu_memory`` is what CUDA reports for a known GPU model
  (``inputs.py``), else the figure given.
- Candidates are tried smallest first: fewest nodes per replica, then fewest GPUs per
  replica (a model that fits one GPU gets TP 1 and replicas), then the smaller PP.
  The first that fits wins; the remaining GPUs become replicas (a replica per free
  slot of the same shape).
- Nothing fits: the refusal names the closest layout and its shortfall (GiB per GPU
  for weights, or tokens and GiB for the KV cache).
"""

from __future__ import annotations

from dataclasses import dataclass

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.memory import (
    DEFAULT_BATCHED_TOKENS,
    replica_memory,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.model import DTYPE_BYTES


@dataclass(frozen=True)
class Layout:
    tp: int
    pp: int
    nodes_per_replica: int
    gpus_per_pod: int
    replicas: int
    stages: tuple

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    @property
    def kv_capacity_tokens(self) -> int:
        return min(stage.kv_capacity_tokens for stage in self.stages)

    def weights_shortfall_gib(self) -> float:
        return max(s.weights_gib + s.overhead_gib - s.budget_gib for s in self.stages)


def kv_dtype_bytes(model, targets) -> float:
    return 1.0 if targets.kv_cache_dtype == "fp8" else DTYPE_BYTES[model.dtype]


def head_problem(model, tp: int) -> str:
    """Why ``tp`` cannot split the model's heads, or '' when it can."""
    if model.num_attention_heads % tp:
        return f"does not divide the {model.num_attention_heads} attention heads"
    kv = model.num_kv_heads
    if kv % tp and tp % kv:
        return f"does not split the {kv} KV heads evenly (neither divides the other)"
    return ""


def _placement(tp: int, pp: int, hardware, pack_stages: bool = False):
    """(nodes_per_replica, gpus_per_pod, replicas), or None if it cannot be placed.

    One pipeline stage per node: a replica of PP stages spans PP nodes (PP x TP/GPUs per
    node with TP across nodes), each node running one pod of the stage's TP GPUs; free
    GPUs of those nodes hold further replicas of the same shape. ``pack_stages`` (only
    for a forced PP) puts several stages on one node, filling whole nodes.
    """
    gpn = hardware.gpus_per_node
    if tp > gpn:
        nodes = tp // gpn * pp
        gpus_per_pod = gpn
        replicas = hardware.nodes // nodes
    elif pp == 1:
        nodes, gpus_per_pod = 1, tp
        replicas = hardware.nodes * (gpn // tp)
    elif not pack_stages:
        nodes, gpus_per_pod = pp, tp
        replicas = hardware.nodes // pp * (gpn // tp)
    elif tp * pp <= gpn:
        nodes, gpus_per_pod = 1, tp * pp
        replicas = hardware.nodes * (gpn // (tp * pp))
    else:
        stages_per_node = gpn // tp
        if pp % stages_per_node:
            return None
        nodes, gpus_per_pod = pp // stages_per_node, gpn
        replicas = hardware.nodes // nodes
    return (nodes, gpus_per_pod, replicas) if replicas >= 1 else None


def _check_forced(model, hardware, request) -> None:
    tp, pp = request.tensor_parallel_size, request.pipeline_parallel_size
    gpn = hardware.gpus_per_node
    if tp is not None:
        problem = head_problem(model, tp)
        if problem:
            raise InvalidInputError(f"layout.tensor_parallel_size {tp} {problem} of {model.name}")
        if tp > gpn and not request.allow_cross_node_tp:
            raise InvalidInputError(
                f"layout.tensor_parallel_size {tp} spans nodes ({gpn} GPUs per node): "
                "tensor parallelism stays inside a node unless layout.allow_cross_node_tp "
                "is true (only with a network that can carry it, e.g. RDMA)"
            )
        if tp > gpn and tp % gpn:
            raise InvalidInputError(
                f"layout.tensor_parallel_size {tp} must be a multiple of the {gpn} GPUs "
                "per node when it spans nodes"
            )
        if tp <= gpn and gpn % tp:
            raise InvalidInputError(
                f"layout.tensor_parallel_size {tp} must divide the {gpn} GPUs per node"
            )
    if pp is not None and pp > model.num_layers:
        raise InvalidInputError(
            f"layout.pipeline_parallel_size {pp} exceeds the {model.num_layers} layers "
            f"of {model.name}"
        )
    needed = (tp or 1) * (pp or 1)
    if needed > hardware.total_gpus:
        raise InvalidInputError(
            f"layout needs {needed} GPUs (TP {tp or 1} x PP {pp or 1}) but the hardware "
            f"has {hardware.total_gpus}"
        )
    if tp is not None and pp is not None and _placement(tp, pp, hardware, pack_stages=True) is None:
        raise InvalidInputError(
            f"layout TP {tp} x PP {pp} cannot be placed on {hardware.nodes} nodes x {gpn} "
            "GPUs: a replica spanning nodes must use whole nodes"
        )


def _candidates(model, hardware, request):
    """(tp, pp, placement) of every layout allowed; PP > 1 only across nodes unless forced."""
    gpn = hardware.gpus_per_node
    forced_pp = request.pipeline_parallel_size
    if request.tensor_parallel_size is not None:
        tps = [request.tensor_parallel_size]
    else:
        tps = [t for t in range(1, gpn + 1) if gpn % t == 0 and not head_problem(model, t)]
    for tp in tps:
        if forced_pp is not None:
            pps = [forced_pp]
        else:
            nodes_per_stage = max(1, tp // gpn)
            pps = range(1, min(model.num_layers, hardware.nodes // nodes_per_stage) + 1)
        for pp in pps:
            placement = _placement(tp, pp, hardware, pack_stages=forced_pp is not None)
            if placement is not None:
                yield tp, pp, placement


def _evaluate(model, hardware, targets, tp, pp, placement) -> Layout:
    stages = replica_memory(
        model,
        tp,
        pp,
        gpu_memory_gib=hardware.gpu_memory_gib,
        utilization=targets.gpu_memory_utilization,
        kv_bytes=kv_dtype_bytes(model, targets),
        batched_tokens=targets.max_num_batched_tokens or DEFAULT_BATCHED_TOKENS,
        overhead_gib=targets.overhead_gib,
    )
    nodes, gpus_per_pod, replicas = placement
    return Layout(tp, pp, nodes, gpus_per_pod, replicas, tuple(stages))


def _fits(layout: Layout, targets) -> bool:
    return (
        all(stage.fits_weights for stage in layout.stages)
        and layout.kv_capacity_tokens >= targets.required_kv_tokens
    )


def _refusal(model, hardware, targets, layouts: list[Layout]) -> InvalidInputError:
    memory = round(hardware.gpu_memory_gib, 2)
    gpus = f"{hardware.gpus_per_node} GPUs of {memory:g} GiB"
    where = f"{hardware.nodes} nodes x {gpus}"
    if not layouts:
        return InvalidInputError(
            f"{model.name}: no layout can be placed on {where} with the given constraints"
        )
    weights_ok = [lay for lay in layouts if all(s.fits_weights for s in lay.stages)]
    budget = targets.gpu_memory_utilization * hardware.gpu_memory_gib
    if not weights_ok:
        best = min(layouts, key=lambda lay: lay.weights_shortfall_gib())
        worst = max(best.stages, key=lambda s: s.weights_gib + s.overhead_gib)
        short = best.weights_shortfall_gib()
        return InvalidInputError(
            f"{model.name} does not fit {where}: even with TP {best.tp} x PP {best.pp} "
            f"({best.gpus_per_replica} GPUs) a GPU needs {worst.weights_gib:.1f} GiB of "
            f"weights + {worst.overhead_gib:.1f} GiB overhead, but gets {budget:.1f} GiB "
            f"({targets.gpu_memory_utilization:g} x {memory:g}); short by "
            f"{short:.1f} GiB per GPU ({short * best.gpus_per_replica:.0f} GiB in total)",
            shortfall_gib_per_gpu=round(short, 2),
            closest_layout={"tensor_parallel_size": best.tp, "pipeline_parallel_size": best.pp},
        )
    best = max(weights_ok, key=lambda lay: lay.kv_capacity_tokens)
    missing = targets.required_kv_tokens - best.kv_capacity_tokens
    tight = min(best.stages, key=lambda s: s.kv_capacity_tokens)
    missing_gib = missing * tight.kv_bytes_per_token / 1024**3
    return InvalidInputError(
        f"{model.name}: the KV cache does not fit {where}: the best layout TP {best.tp} x "
        f"PP {best.pp} holds {best.kv_capacity_tokens} tokens, {targets.required_kv_tokens} "
        f"are required (max_model_len {model.max_model_len}); short by {missing} tokens "
        f"({missing_gib:.2f} GiB per GPU). Lower max_model_len or the headroom, raise "
        "gpu_memory_utilization, or use kv_cache_dtype fp8 / a quantized model",
        shortfall_tokens=missing,
        closest_layout={"tensor_parallel_size": best.tp, "pipeline_parallel_size": best.pp},
    )


def choose_layout(model, hardware, targets, request) -> Layout:
    """The smallest layout that fits (see the module docstring), or a clear refusal."""
    _check_forced(model, hardware, request)
    layouts = [
        _evaluate(model, hardware, targets, tp, pp, placement)
        for tp, pp, placement in _candidates(model, hardware, request)
    ]
    layouts.sort(key=lambda lay: (lay.nodes_per_replica, lay.gpus_per_replica, lay.pp))
    for layout in layouts:
        if _fits(layout, targets):
            return layout
    raise _refusal(model, hardware, targets, layouts)
