# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Hardware, serving targets, forced layout and topology: parsed and validated.

API
---
``hardware_from_options(dict) -> Hardware``: ``nodes``, ``gpus_per_node``,
``gpu_memory_gib`` (required), ``nvlink`` (GPUs inside a node share NVLink),
``rdma`` (nodes reach each other over RDMA), ``gpu_model`` (a label).
The memory planned with (``Hardware.gpu_memory_gib``) is what CUDA reports when
``gpu_model`` names a GPU of ``presets.GPU_MEMORY`` (users type "80" for an H100 80GB
HBM3, CUDA reports 79.18 GiB), unless the figure given is lower; otherwise the figure
given. ``gpu_memory_given`` and ``gpu_memory_source`` say which and why.

``targets_from_options(dict, max_model_len) -> Targets``: ``gpu_memory_utilization``
(default 0.9), the KV-cache headroom as ``kv_cache_tokens`` or
``concurrent_sequences`` (sequences of ``max_model_len`` tokens; default: one, the
minimum vLLM starts with), ``kv_cache_dtype`` (``auto`` = the model dtype, or
``fp8``), ``max_num_batched_tokens`` (also passed to vLLM), ``overhead_gib``.

``layout_from_options(dict) -> LayoutRequest``: forced ``tensor_parallel_size`` /
``pipeline_parallel_size`` and ``allow_cross_node_tp`` (TP across nodes is refused
unless this is set: the user says the network can take it).

``check_topology(name) -> str``: ``head_without_gpus`` (default: Ray head with 0
GPUs, one worker pod per GPU node) or ``head_with_gpus`` (vLLM in a GPU head pod
that counts as one of the nodes).

Every problem raises ``InvalidInputError`` naming the option.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.presets import GPU_MEMORY

TOPOLOGIES = ("head_without_gpus", "head_with_gpus")
KV_CACHE_DTYPES = ("auto", "fp8")


@dataclass(frozen=True)
class Hardware:
    nodes: int
    gpus_per_node: int
    gpu_memory_gib: float
    nvlink: bool = False
    rdma: bool = False
    gpu_model: str = ""
    gpu_memory_given: float | None = None
    gpu_memory_source: str = "as given"

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class Targets:
    gpu_memory_utilization: float
    required_kv_tokens: int
    kv_cache_dtype: str = "auto"
    max_num_batched_tokens: int | None = None
    overhead_gib: float | None = None


@dataclass(frozen=True)
class LayoutRequest:
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    allow_cross_node_tp: bool = False


def _clean(options: dict | None) -> dict:
    return {key: value for key, value in (options or {}).items() if value is not None}


def _int(options: dict, section: str, key: str, minimum: int, required: bool = False):
    value = options.get(key)
    if value is None:
        if required:
            raise InvalidInputError(f"{section}.{key} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{section}.{key} must be a whole number, got {value!r}")
    if value < minimum:
        raise InvalidInputError(f"{section}.{key} must be at least {minimum}, got {value}")
    return value


def _number(options: dict, section: str, key: str, required: bool = False):
    value = options.get(key)
    if value is None:
        if required:
            raise InvalidInputError(f"{section}.{key} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidInputError(f"{section}.{key} must be a positive number, got {value!r}")
    return float(value)


def _name_tokens(gpu_model: str) -> set[str]:
    """Upper-case words of a GPU name, '80 GB' / '80G' / '80GiB' written as '80GB'."""
    text = re.sub(r"(?<![A-Z0-9])(\d+)\s*G(?:I?B)?(?![A-Z0-9])", r"\1GB", gpu_model.upper())
    return set(re.split(r"[^A-Z0-9]+", text)) - {"", "NVIDIA", "TESLA"}


def _known_gpu(gpu_model: str) -> tuple[str, dict] | None:
    """(name, facts) of the ``GPU_MEMORY`` entry ``gpu_model`` names, or None."""
    tokens = _name_tokens(gpu_model)
    for name, facts in GPU_MEMORY.items():
        if any(words <= tokens for words in facts["match"]):
            return name, facts
    return None


def usable_gpu_memory(given: float, gpu_model: str) -> tuple[float, str]:
    """The GiB of one GPU to plan with, and a sentence saying where it comes from."""
    known = _known_gpu(gpu_model)
    if known is None:
        if not gpu_model:
            return given, "as given (no hardware.gpu_model)"
        return given, f"as given (no CUDA-reported figure known for {gpu_model!r})"
    name, facts = known
    cuda_gib = facts["cuda_bytes"] / 1024**3
    if given < cuda_gib:
        return given, f"as given (below the {cuda_gib:.2f} GiB CUDA reports for {name})"
    return cuda_gib, (
        f"known model {name}: {cuda_gib:.2f} GiB as CUDA reports ({facts['cuda_bytes']} bytes; "
        f"{facts['source']}), not the {given:g} GiB given"
    )


def hardware_from_options(options: dict | None) -> Hardware:
    """Parse and check the ``hardware`` option."""
    options = _clean(options)
    nodes = _int(options, "hardware", "nodes", 1, required=True)
    gpus_per_node = _int(options, "hardware", "gpus_per_node", 1, required=True)
    given = _number(options, "hardware", "gpu_memory_gib", required=True)
    gpu_model = str(options.get("gpu_model", ""))
    used, source = usable_gpu_memory(given, gpu_model)
    return Hardware(
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        gpu_memory_gib=used,
        nvlink=bool(options.get("nvlink", False)),
        rdma=bool(options.get("rdma", False)),
        gpu_model=gpu_model,
        gpu_memory_given=given,
        gpu_memory_source=source,
    )


def targets_from_options(options: dict | None, max_model_len: int) -> Targets:
    """Parse and check the ``targets`` option against the model's max length."""
    options = _clean(options)
    utilization = _number(options, "targets", "gpu_memory_utilization") or 0.9
    if utilization > 1:
        raise InvalidInputError(
            f"targets.gpu_memory_utilization must be in (0, 1], got {utilization}"
        )
    tokens = _int(options, "targets", "kv_cache_tokens", 1)
    sequences = _int(options, "targets", "concurrent_sequences", 1)
    if tokens is not None and sequences is not None:
        raise InvalidInputError("targets: give kv_cache_tokens or concurrent_sequences, not both")
    if tokens is not None and tokens < max_model_len:
        raise InvalidInputError(
            f"targets.kv_cache_tokens {tokens} is below max_model_len {max_model_len}: "
            "vLLM refuses to start unless one full-length sequence fits in the KV cache"
        )
    required = tokens if tokens is not None else (sequences or 1) * max_model_len
    kv_dtype = str(options.get("kv_cache_dtype", "auto"))
    if kv_dtype not in KV_CACHE_DTYPES:
        raise InvalidInputError(
            f"targets.kv_cache_dtype {kv_dtype!r} is not one of {list(KV_CACHE_DTYPES)}"
        )
    return Targets(
        gpu_memory_utilization=utilization,
        required_kv_tokens=required,
        kv_cache_dtype=kv_dtype,
        max_num_batched_tokens=_int(options, "targets", "max_num_batched_tokens", 1),
        overhead_gib=_number(options, "targets", "overhead_gib"),
    )


def layout_from_options(options: dict | None) -> LayoutRequest:
    """Parse and check the ``layout`` option (forced sizes)."""
    options = _clean(options)
    return LayoutRequest(
        tensor_parallel_size=_int(options, "layout", "tensor_parallel_size", 1),
        pipeline_parallel_size=_int(options, "layout", "pipeline_parallel_size", 1),
        allow_cross_node_tp=bool(options.get("allow_cross_node_tp", False)),
    )


def check_topology(name: str | None) -> str:
    """Return the topology name, refusing unknown ones."""
    name = name or TOPOLOGIES[0]
    if name not in TOPOLOGIES:
        raise InvalidInputError(f"topology {name!r} is not one of {list(TOPOLOGIES)}")
    return name
