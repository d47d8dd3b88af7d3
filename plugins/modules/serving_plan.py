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
    type: dict
    required: true
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
plan:
  description: The serving plan.
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
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.model import ARCH_FIELDS
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.presets import PRESETS

_MODEL_INT_FIELDS = [field for field in ARCH_FIELDS if field != "tie_word_embeddings"]


def argument_spec() -> dict:
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
    return {
        "model": {
            "type": "dict",
            "required": True,
            "options": model,
            "mutually_exclusive": [sources, ["preset", "parameters"]]
            + [[*sources, field] for field in ARCH_FIELDS],
            "required_one_of": [[*sources, "num_layers"]],
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
        "targets": {
            "type": "dict",
            "options": {
                "gpu_memory_utilization": {"type": "float", "default": 0.9},
                "kv_cache_tokens": {"type": "int", "no_log": False},
                "concurrent_sequences": {"type": "int"},
                "kv_cache_dtype": {"type": "str", "choices": ["auto", "fp8"], "default": "auto"},
                "max_num_batched_tokens": {"type": "int", "no_log": False},
                "overhead_gib": {"type": "float"},
            },
            "mutually_exclusive": [["kv_cache_tokens", "concurrent_sequences"]],
        },
        "layout": {
            "type": "dict",
            "options": {
                "tensor_parallel_size": {"type": "int"},
                "pipeline_parallel_size": {"type": "int"},
                "allow_cross_node_tp": {"type": "bool", "default": False},
            },
        },
        "topology": {
            "type": "str",
            "choices": ["head_without_gpus", "head_with_gpus"],
            "default": "head_without_gpus",
        },
    }


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    try:
        plan = build_plan(
            params["model"],
            params["hardware"],
            targets=params["targets"],
            layout=params["layout"],
            topology=params["topology"],
        )
    except GpuStackError as exc:
        module.fail_json(**exc.fail_kwargs())
    module.exit_json(changed=False, plan=plan)


if __name__ == "__main__":
    main()
