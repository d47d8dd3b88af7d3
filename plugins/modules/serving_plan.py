#!/usr/bin/python
# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: serving_plan
short_description: Plan tensor parallel x pipeline parallel x replicas for vLLM on a GPU fleet
version_added: 0.1.0
description:
  - Computes the vLLM layout for a model on a GPU fleet, without changing anything.
  - Tensor parallelism stays inside a node, pipeline parallelism goes across nodes; the
    smallest layout that fits the weights plus the requested KV-cache headroom is chosen,
    and the remaining GPUs become replicas.
  - Returns the tensor and pipeline parallel sizes, the number of replicas, a per-GPU
    memory breakdown, the KV-cache capacity, the vLLM arguments, the Ray cluster shape
    for the chosen O(topology) and warnings.
  - Refuses impossible input before anything is deployed, with a message saying what
    does not fit and by how much.
  - With O(models), plans several models on the one fleet as a whole - each model's
    layout, its replicas, the nodes they are counted on and its serving backend - and
    refuses a fleet too small, naming the model and its shortfall.
  - The memory model (weights, overhead, KV cache per token) is documented in the
    collection's C(plugins/module_utils/serving/memory.py); its numbers are estimates,
    vLLM measures the real ones when it starts.
author:
  - llmops.gpu_stack maintainers (@llmops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module never changes anything; it reports C(changed=false).
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  model:
    description:
      - The model. Give exactly one source, O(model.preset), O(model.config_path) or the
        explicit architecture fields (O(model.num_layers) and the others).
      - O(model.name), O(model.dtype), O(model.quantization) and O(model.max_model_len)
        apply to any source and override it.
      - Exactly one of O(model) and O(models).
    type: dict
    suboptions:
      preset:
        description:
          - A well-known model whose published C(config.json) facts ship with the collection.
        type: str
        choices: [llama-3-70b, llama-3-8b, llama-3.1-405b, mistral-7b, mixtral-8x7b, vicuna-13b]
      config_path:
        description:
          - Path to a Hugging Face C(config.json), or to the model directory holding it,
            on the host the module runs on.
        type: path
      name:
        description:
          - Name used in messages and the plan. Defaults to the preset name or the
            config's C(_name_or_path).
        type: str
      parameters:
        description:
          - Total number of parameters (for example V(8.03e9)). Counted from the
            architecture when not given (needs O(model.vocab_size) and
            O(model.intermediate_size)). Not with O(model.preset).
        type: float
      num_layers:
        description:
          - Number of transformer layers (C(num_hidden_layers)).
        type: int
      num_attention_heads:
        description:
          - Number of attention (query) heads.
        type: int
      num_kv_heads:
        description:
          - Number of key/value heads (grouped-query attention). Defaults to
            O(model.num_attention_heads).
        type: int
      hidden_size:
        description:
          - Hidden size (model width).
        type: int
      head_dim:
        description:
          - Size of one attention head. Defaults to O(model.hidden_size) divided by
            O(model.num_attention_heads).
        type: int
      vocab_size:
        description:
          - Vocabulary size (embedding and LM head rows).
        type: int
      intermediate_size:
        description:
          - MLP (or, for a mixture of experts, per-expert) intermediate size.
        type: int
      num_experts:
        description:
          - Number of experts of a mixture-of-experts model.
        type: int
      num_experts_per_token:
        description:
          - Experts each token is routed to (mixture of experts).
        type: int
      tie_word_embeddings:
        description:
          - Whether the LM head shares the embedding weights. Treated as false when not given.
        type: bool
      dtype:
        description:
          - Weight and activation dtype vLLM serves with. Defaults to the checkpoint's dtype
            (a float32 checkpoint is served as bfloat16).
        type: str
        choices: [bfloat16, float16, float32]
      quantization:
        description:
          - Weight quantization. V(awq) and V(gptq) are 4-bit, V(int8) and V(fp8) 8-bit.
          - Read from the config's C(quantization_config) when not given.
        type: str
        choices: [none, int8, fp8, awq, gptq]
      max_model_len:
        description:
          - Longest sequence (prompt plus output) to serve. Defaults to the model's
            C(max_position_embeddings).
        type: int
  models:
    description:
      - Several models served on the one fleet, planned as a whole. Exactly one of
        O(model) and O(models).
      - Each model gets its smallest layout (as O(model) alone would), at least one
        replica (or O(models[].replicas), or its O(models[].gpus) share); replicas
        spanning nodes are placed on whole nodes first, then single-node replicas are
        packed; the GPUs still free go, one replica at a time in list order, to the
        models that give neither O(models[].replicas) nor O(models[].gpus).
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - The served model name (the C(model) field of a request). Unique in the list.
        type: str
        required: true
      model_dir:
        description:
          - Directory of the model's weights on the model volume (default O(models[].name)),
            returned for the serving stage. Unique in the list.
        type: str
      model:
        description:
          - The planner inputs, as O(model) (the same sub-options and rules).
        type: dict
        required: true
        suboptions:
          preset:
            description: A well-known model whose C(config.json) facts ship with the collection.
            type: str
            choices: [llama-3-70b, llama-3-8b, llama-3.1-405b, mistral-7b, mixtral-8x7b, vicuna-13b]
          config_path:
            description: A Hugging Face C(config.json), or the model directory holding it.
            type: path
          name:
            description: Name in messages and the plan (the served name is O(models[].name)).
            type: str
          parameters:
            description: Total number of parameters.
            type: float
          num_layers:
            description: Transformer layers.
            type: int
          num_attention_heads:
            description: Attention (query) heads.
            type: int
          num_kv_heads:
            description: Key/value heads.
            type: int
          hidden_size:
            description: Hidden size.
            type: int
          head_dim:
            description: Size of one attention head.
            type: int
          vocab_size:
            description: Vocabulary size.
            type: int
          intermediate_size:
            description: MLP (or per-expert) intermediate size.
            type: int
          num_experts:
            description: Experts of a mixture-of-experts model.
            type: int
          num_experts_per_token:
            description: Experts each token is routed to.
            type: int
          tie_word_embeddings:
            description: Whether the LM head shares the embedding weights.
            type: bool
          dtype:
            description: Dtype vLLM serves with.
            type: str
            choices: [bfloat16, float16, float32]
          quantization:
            description: Weight quantization.
            type: str
            choices: [none, int8, fp8, awq, gptq]
          max_model_len:
            description: Longest sequence (prompt plus output) to serve.
            type: int
      backend:
        description:
          - How the model is served. V(ray) is a RayCluster per replica; V(deployment) plain
            vLLM pods, one per replica, without Ray (refused for a replica spanning nodes).
          - V(kserve) is one KServe InferenceService per replica (Red Hat OpenShift AI or Open
            Data Hub), PP pods of TP GPUs each; refused when TP exceeds the GPUs of a node.
          - V(auto) picks V(deployment) when a replica fits one node (PP 1 and TP at most the
            GPUs per node), else V(ray); it never picks V(kserve).
        type: str
        choices: [auto, ray, deployment, kserve]
        default: auto
      replicas:
        description:
          - Exactly this many replicas. Not with O(models[].gpus).
        type: int
      gpus:
        description:
          - A GPU share - as many replicas as fit in this many GPUs. Not with
            O(models[].replicas).
        type: int
      targets:
        description:
          - This model's serving targets; the keys given win over O(targets).
        type: dict
        suboptions:
          gpu_memory_utilization:
            description: Fraction of each GPU's memory vLLM may use.
            type: float
          kv_cache_tokens:
            description:
              - KV-cache tokens each replica must hold (replaces a fleet-wide
                O(targets.concurrent_sequences)).
            type: int
          concurrent_sequences:
            description:
              - KV-cache headroom as full-length sequences (replaces a fleet-wide
                O(targets.kv_cache_tokens)).
            type: int
          kv_cache_dtype:
            description: KV-cache dtype.
            type: str
            choices: [auto, fp8]
          max_num_batched_tokens:
            description: Tokens per scheduler step.
            type: int
          overhead_gib:
            description: Fixed per-GPU overhead in GiB.
            type: float
      layout:
        description:
          - This model's forced layout; the keys given win over O(layout).
        type: dict
        suboptions:
          tensor_parallel_size:
            description: Forced tensor parallel size.
            type: int
          pipeline_parallel_size:
            description: Forced pipeline parallel size.
            type: int
          allow_cross_node_tp:
            description: Allow a tensor parallel size larger than the GPUs per node.
            type: bool
  hardware:
    description:
      - The GPU fleet.
    type: dict
    required: true
    suboptions:
      nodes:
        description:
          - Number of GPU nodes (OpenShift worker VMs with passthrough GPUs).
        type: int
        required: true
      gpus_per_node:
        description:
          - GPUs in each node.
        type: int
        required: true
      gpu_memory_gib:
        description:
          - Memory of one GPU in GiB (40 for an A100 40GB).
          - When O(hardware.gpu_model) names a GPU whose memory as CUDA reports it is known
            (H100 80GB HBM3, A100-SXM4-40GB), the plan uses that figure unless this one is
            lower; RV(plan.hardware) says which figure was used and why.
        type: float
        required: true
      nvlink:
        description:
          - Whether the GPUs inside a node share NVLink.
        type: bool
        default: false
      rdma:
        description:
          - Whether the nodes reach each other over RDMA (InfiniBand or RoCE).
        type: bool
        default: false
      gpu_model:
        description:
          - The GPU model, shown in the plan, as C(nvidia-smi) or GPU Feature Discovery
            name it (for example V(NVIDIA H100 80GB HBM3) or V(NVIDIA-H100-80GB-HBM3)).
        type: str
  targets:
    description:
      - Serving targets.
    type: dict
    suboptions:
      gpu_memory_utilization:
        description:
          - Fraction of each GPU's memory vLLM may use (weights, activations, KV cache).
        type: float
        default: 0.9
      kv_cache_tokens:
        description:
          - KV-cache tokens each replica must hold, at least O(model.max_model_len).
          - Default is one full-length sequence, the minimum vLLM starts with.
        type: int
      concurrent_sequences:
        description:
          - KV-cache headroom as a number of concurrent full-length sequences
            (O(targets.concurrent_sequences) x O(model.max_model_len) tokens).
        type: int
      kv_cache_dtype:
        description:
          - KV-cache dtype. V(auto) uses the model dtype; V(fp8) halves the cache.
        type: str
        choices: [auto, fp8]
        default: auto
      max_num_batched_tokens:
        description:
          - Tokens per scheduler step; sizes the activation estimate and is passed to vLLM.
            The estimate assumes 2048 when not given.
        type: int
      overhead_gib:
        description:
          - Fixed per-GPU overhead in GiB (CUDA context, CUDA graphs, NCCL buffers),
            replacing the built-in estimate of 1.0 GiB, plus 0.5 GiB when a replica has
            more than one GPU.
        type: float
  layout:
    description:
      - Force parts of the layout instead of letting the planner choose.
    type: dict
    suboptions:
      tensor_parallel_size:
        description:
          - Force the tensor parallel size. It must divide the attention heads and split the
            KV heads evenly, and divide the GPUs per node (or be a multiple of it with
            O(layout.allow_cross_node_tp)).
        type: int
      pipeline_parallel_size:
        description:
          - Force the pipeline parallel size (at most the number of layers).
          - Unforced, PP is 1 inside a node and equals the nodes a replica spans (one stage
            per node); forcing it is the only way to put several stages on one node.
        type: int
      allow_cross_node_tp:
        description:
          - Allow a forced O(layout.tensor_parallel_size) larger than the GPUs per node.
            Only for networks that can carry tensor-parallel traffic between nodes.
        type: bool
        default: false
  topology:
    description:
      - Ray cluster topology. V(head_without_gpus) runs a Ray head with 0 GPUs and one
        worker pod per GPU node. V(head_with_gpus) runs vLLM in a head pod that holds one
        node's GPUs and counts as one of the replica's nodes.
    type: str
    choices: [head_without_gpus, head_with_gpus]
    default: head_without_gpus
notes:
  - Rendering the RayCluster manifest from the plan is not part of this module.
seealso:
  - name: vLLM parallelism and scaling
    description: The TP-per-node, PP-per-node-count guidance the planner follows.
    link: https://docs.vllm.ai/en/latest/serving/parallelism_scaling/
"""

EXAMPLES = r"""
- name: Plan Llama 3 70B on the reference site (8 nodes x 2 A100 40GB, no NVLink)
  llmops.gpu_stack.serving_plan:
    model:
      preset: llama-3-70b
    hardware:
      nodes: 8
      gpus_per_node: 2
      gpu_memory_gib: 40
    targets:
      concurrent_sequences: 8
  register: plan

- name: Show the layout
  ansible.builtin.debug:
    msg: "{{ plan.plan.summary }}"

- name: Plan Llama 3 70B over nodes and two smaller models on single nodes, one fleet
  llmops.gpu_stack.serving_plan:
    models:
      - name: llama-3-70b
        model: {preset: llama-3-70b}
      - name: llama-3-8b
        model: {preset: llama-3-8b}
        replicas: 2
      - name: mistral-7b
        model: {preset: mistral-7b}
        gpus: 2
        backend: deployment
    hardware:
      nodes: 8
      gpus_per_node: 2
      gpu_memory_gib: 40
  register: fleet_plan

- name: Plan a local model from its config.json, with vLLM in a GPU head pod
  llmops.gpu_stack.serving_plan:
    model:
      config_path: /models/mixtral-8x7b
      max_model_len: 8192
    hardware:
      nodes: 8
      gpus_per_node: 1
      gpu_memory_gib: 24
      gpu_model: A10G
    topology: head_with_gpus

- name: Plan from explicit architecture fields, 4-bit AWQ, fp8 KV cache
  llmops.gpu_stack.serving_plan:
    model:
      name: my-13b
      parameters: 13.0e9
      num_layers: 40
      num_attention_heads: 40
      hidden_size: 5120
      dtype: float16
      quantization: awq
      max_model_len: 4096
    hardware:
      nodes: 2
      gpus_per_node: 1
      gpu_memory_gib: 16
    targets:
      kv_cache_dtype: fp8
      kv_cache_tokens: 32768
"""

RETURN = r"""
plans:
  description:
    - One entry per model, in the order of O(models) (one entry for O(model)) - the
      contract the serving stage and the gateway read.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The served model name (O(models[].name); for O(model), O(model.name)
        or the plan's model name).
      returned: success
      type: str
    model_dir:
      description: Directory of the weights on the model volume (default the name).
      returned: success
      type: str
    backend:
      description: V(ray), V(deployment) or V(kserve), V(auto) resolved.
      returned: success
      type: str
    backend_reason:
      description: Why this backend, in one sentence.
      returned: success
      type: str
    plan:
      description: This model's plan, the keys of RV(plan), with C(replicas), C(gpus_used)
        and C(ray_cluster.clusters) for this model's share.
      returned: success
      type: dict
    nodes:
      description: Where the planner counted the replicas - C(node) (position in the
        fleet, 0-based) and C(gpus) (GPUs of that node this model uses).
      returned: success
      type: list
      elements: dict
fleet:
  description: The fleet as a whole - nodes, gpus_per_node, total_gpus, gpus_used,
    gpus_idle, per_node (GPUs used on each node), warnings and summary lines.
  returned: success
  type: dict
plan:
  description: The serving plan (of the first model of O(models)).
  returned: success
  type: dict
  contains:
    model:
      description: The model as planned (name, source, parameter count, architecture, dtype,
        quantization, max_model_len, weights_gib for the whole model).
      returned: success
      type: dict
    hardware:
      description: The hardware as planned, with total_gpus. gpu_memory_gib is the memory
        given; gpu_memory_gib_used the memory the plan uses (what CUDA reports for a known
        gpu_model) and gpu_memory_source which figure that is and where it comes from.
      returned: success
      type: dict
    topology:
      description: The Ray cluster topology.
      returned: success
      type: str
      sample: head_without_gpus
    tensor_parallel_size:
      description: Tensor parallel size (GPUs of one pipeline stage, inside one node).
      returned: success
      type: int
      sample: 2
    pipeline_parallel_size:
      description: Pipeline parallel size (stages, across nodes).
      returned: success
      type: int
      sample: 4
    replicas:
      description: Number of independent vLLM replicas (one Ray cluster each).
      returned: success
      type: int
      sample: 2
    gpus_per_replica:
      description: GPUs of one replica (TP x PP).
      returned: success
      type: int
    nodes_per_replica:
      description: Nodes one replica spans.
      returned: success
      type: int
    gpus_used:
      description: GPUs used by all replicas.
      returned: success
      type: int
    gpus_idle:
      description: GPUs left unused.
      returned: success
      type: int
    memory:
      description: Per-GPU memory in GiB. C(per_gpu) has one entry per pipeline stage with
        layers, budget_gib, weights_gib, overhead_gib, kv_cache_gib, kv_bytes_per_token and
        kv_capacity_tokens; weights_per_gpu_gib is the largest stage, kv_cache_per_gpu_gib the
        smallest.
      returned: success
      type: dict
    kv_cache:
      description: KV cache per replica (capacity_tokens, required_tokens, dtype,
        bytes_per_token for the whole model, max_concurrent_sequences at max_model_len).
      returned: success
      type: dict
    vllm_args:
      description: Arguments for C(vllm serve) (model path, host and port not included).
      returned: success
      type: list
      elements: str
      sample: ["--tensor-parallel-size", "2", "--pipeline-parallel-size", "2",
               "--distributed-executor-backend", "ray", "--max-model-len", "8192",
               "--gpu-memory-utilization", "0.9", "--dtype", "bfloat16"]
    ray_cluster:
      description: Shape of the Ray cluster of one replica (clusters, head_gpus,
        worker_groups with name, replicas and gpus_per_worker, pods, gpus_per_cluster).
      returned: success
      type: dict
    warnings:
      description: Things to know about the plan (PCIe tensor parallel, idle GPUs, ...).
      returned: success
      type: list
      elements: str
    summary:
      description: Readable lines describing the plan.
      returned: success
      type: list
      elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import GpuStackError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.fleet import (
    BACKENDS,
    plan_fleet,
    plan_single,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.model import ARCH_FIELDS
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.presets import PRESETS

_MODEL_INT_FIELDS = [field for field in ARCH_FIELDS if field != "tie_word_embeddings"]


def _model_spec(required: bool) -> dict:
    model = {field: {"type": "int"} for field in _MODEL_INT_FIELDS}
    # "token" in a name looks like a secret to validate-modules; these are counts.
    model["num_experts_per_token"]["no_log"] = False
    model.update(
        preset={"type": "str", "choices": sorted(PRESETS)},
        config_path={"type": "path"},
        name={"type": "str"},
        parameters={"type": "float"},
        tie_word_embeddings={"type": "bool"},
        dtype={"type": "str", "choices": ["bfloat16", "float16", "float32"]},
        quantization={"type": "str", "choices": ["none", "int8", "fp8", "awq", "gptq"]},
        max_model_len={"type": "int"},
    )
    sources = ["preset", "config_path"]
    spec = {
        "type": "dict",
        "options": model,
        "mutually_exclusive": [sources, ["preset", "parameters"]]
        + [[*sources, field] for field in ARCH_FIELDS],
        "required_one_of": [[*sources, "num_layers"]],
    }
    if required:
        spec["required"] = True
    return spec


def _targets_spec(defaults: bool) -> dict:
    options = {
        "gpu_memory_utilization": {"type": "float", "default": 0.9},
        "kv_cache_tokens": {"type": "int", "no_log": False},
        "concurrent_sequences": {"type": "int"},
        "kv_cache_dtype": {"type": "str", "choices": ["auto", "fp8"], "default": "auto"},
        "max_num_batched_tokens": {"type": "int", "no_log": False},
        "overhead_gib": {"type": "float"},
    }
    if not defaults:  # a model's own targets: only the keys given win over the fleet's
        for option in options.values():
            option.pop("default", None)
    return {
        "type": "dict",
        "options": options,
        "mutually_exclusive": [["kv_cache_tokens", "concurrent_sequences"]],
    }


def _layout_spec(defaults: bool) -> dict:
    allow = {"type": "bool", "default": False} if defaults else {"type": "bool"}
    return {
        "type": "dict",
        "options": {
            "tensor_parallel_size": {"type": "int"},
            "pipeline_parallel_size": {"type": "int"},
            "allow_cross_node_tp": allow,
        },
    }


def argument_spec() -> dict:
    return {
        "model": _model_spec(required=False),
        "models": {
            "type": "list",
            "elements": "dict",
            "options": {
                "name": {"type": "str", "required": True},
                "model_dir": {"type": "str"},
                "model": _model_spec(required=True),
                "backend": {"type": "str", "choices": list(BACKENDS), "default": "auto"},
                "replicas": {"type": "int"},
                "gpus": {"type": "int"},
                "targets": _targets_spec(defaults=False),
                "layout": _layout_spec(defaults=False),
            },
            "mutually_exclusive": [["replicas", "gpus"]],
        },
        "hardware": {
            "type": "dict",
            "required": True,
            "options": {
                "nodes": {"type": "int", "required": True},
                "gpus_per_node": {"type": "int", "required": True},
                "gpu_memory_gib": {"type": "float", "required": True},
                "nvlink": {"type": "bool", "default": False},
                "rdma": {"type": "bool", "default": False},
                "gpu_model": {"type": "str"},
            },
        },
        "targets": _targets_spec(defaults=True),
        "layout": _layout_spec(defaults=True),
        "topology": {
            "type": "str",
            "choices": ["head_without_gpus", "head_with_gpus"],
            "default": "head_without_gpus",
        },
    }


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[["model", "models"]],
        required_one_of=[["model", "models"]],
        supports_check_mode=True,
    )
    params = module.params
    fleet_wide = (params["hardware"], params["targets"], params["layout"], params["topology"])
    try:
        if params["models"] is not None:
            result = plan_fleet(params["models"], *fleet_wide)
        else:
            result = plan_single(params["model"], *fleet_wide)
    except GpuStackError as exc:
        module.fail_json(**exc.fail_kwargs())
    module.exit_json(changed=False, plan=result["plans"][0]["plan"], **result)


if __name__ == "__main__":
    main()
