"""TP inside a node, PP only across nodes (serving/planner.py, issue 18 item 5).

Independent checks: the expected layouts below are reasoned from the weights and the
per-GPU budget (a smaller TP cannot hold the weights, or cannot hold the KV target),
and every plan's pods are counted against the fleet, not read from the planner.
"""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.presets import PRESETS


def node(gpus, memory, nodes=1):
    return {"nodes": nodes, "gpus_per_node": gpus, "gpu_memory_gib": memory, "nvlink": True}


def shape(plan):
    return (plan["tensor_parallel_size"], plan["pipeline_parallel_size"], plan["replicas"])


def assert_one_stage_per_node(plan, hardware):
    """Each GPU pod of a replica runs on its own node and holds at most one stage."""
    tp, pp = plan["tensor_parallel_size"], plan["pipeline_parallel_size"]
    gpn, nodes = hardware["gpus_per_node"], hardware["nodes"]
    ray = plan["ray_cluster"]
    pod_gpus = [g["gpus_per_worker"] for g in ray["worker_groups"]
                for _replica in range(g["replicas"])]
    if ray["head_gpus"]:
        pod_gpus.append(ray["head_gpus"])
    assert sum(pod_gpus) == tp * pp
    assert all(gpus <= gpn for gpus in pod_gpus)
    if tp <= gpn:
        # a pod is one node's share of a replica; it holds one stage (TP GPUs) at most
        assert all(gpus == tp for gpus in pod_gpus) or pp == 1
        assert len(pod_gpus) == pp
        assert pp <= nodes
        slots = (nodes // pp) * (gpn // tp)
        assert 1 <= plan["replicas"] <= slots
    if pp > 1:
        assert "--distributed-executor-backend" in plan["vllm_args"]


# --- single-node fleets of 2, 4 and 8 GPUs, with and without a KV-cache target ---------


@pytest.mark.parametrize(
    "preset, hardware, sequences, expected",
    [
        # 2 GPUs: vicuna 13B (24 GiB fp16) fits one 40 GB GPU -> replicas (seed 002);
        # 8 full sequences need the KV cache of both GPUs -> TP 2
        ("vicuna-13b", node(2, 40), None, (1, 1, 2)),
        ("vicuna-13b", node(2, 40), 8, (2, 1, 1)),
        ("llama-3-70b", node(2, 80), None, (2, 1, 1)),
        # 4 GPUs: Mixtral (87 GiB) does not fit 2 x 43 GiB -> TP 4, not TP 1 x PP 3
        ("mixtral-8x7b", node(4, 48), None, (4, 1, 1)),
        ("mixtral-8x7b", node(4, 48), 8, (4, 1, 1)),
        ("llama-3-8b", node(4, 24), None, (1, 1, 4)),
        ("llama-3-8b", node(4, 24), 8, (2, 1, 2)),
        ("mistral-7b", node(4, 24), 8, (4, 1, 1)),
        # 8 GPUs with NVLink: the case, Llama 3 70B with a KV target was TP 1 x PP 3
        ("llama-3-70b", node(8, 80), None, (2, 1, 4)),
        ("llama-3-70b", node(8, 80), 8, (4, 1, 2)),
        ("llama-3-70b", node(8, 40), 8, (8, 1, 1)),
        ("mixtral-8x7b", node(8, 24), None, (8, 1, 1)),
        ("llama-3-8b", node(8, 80), None, (1, 1, 8)),
    ],
)
def test_single_node_fleets_use_tensor_parallelism_not_stages(
    preset, hardware, sequences, expected
):
    targets = {"concurrent_sequences": sequences}
    plan = build_plan({"preset": preset}, hardware, targets=targets)
    assert shape(plan) == expected
    tp = plan["tensor_parallel_size"]
    assert plan["nodes_per_replica"] == 1
    assert plan["gpus_idle"] == hardware["gpus_per_node"] - tp * plan["replicas"]
    assert "--distributed-executor-backend" not in plan["vllm_args"]
    assert_one_stage_per_node(plan, hardware)
    # independent: the next smaller TP that divides the heads does not fit, by weights
    # (whole model over TP GPUs vs the budget) or by the KV target
    smaller = [t for t in (1, 2, 4) if t < tp]
    if smaller:
        weights_per_gpu = plan["model"]["weights_gib"] / smaller[-1]
        if weights_per_gpu <= plan["memory"]["budget_gib"]:
            with pytest.raises(InvalidInputError, match="KV cache does not fit"):
                build_plan(
                    {"preset": preset},
                    hardware,
                    targets=targets,
                    layout={"tensor_parallel_size": smaller[-1], "pipeline_parallel_size": 1},
                )


def test_a_forced_pipeline_may_still_put_stages_on_one_node():
    hardware = node(8, 80)
    plan = build_plan(
        {"preset": "llama-3-70b"},
        hardware,
        targets={"concurrent_sequences": 8},
        layout={"pipeline_parallel_size": 3},
    )
    assert plan["pipeline_parallel_size"] == 3
    assert plan["nodes_per_replica"] == 1
    assert (
        plan["ray_cluster"]["worker_groups"][0]["gpus_per_worker"]
        == 3 * plan["tensor_parallel_size"]
    )


# --- across nodes: one stage per node, TP = the GPUs used on each node ----------------

# 6 KV heads cannot be split 4 ways, so TP is at most 2 on 4-GPU nodes.
GQA_6 = {
    "name": "gqa-6",
    "parameters": 20e9,
    "num_layers": 48,
    "num_attention_heads": 48,
    "num_kv_heads": 6,
    "hidden_size": 6144,
    "dtype": "bfloat16",
    "max_model_len": 4096,
}


def test_a_replica_across_nodes_has_one_stage_per_node_and_shares_the_nodes():
    hardware = {"nodes": 2, "gpus_per_node": 4, "gpu_memory_gib": 16}
    plan = build_plan(GQA_6, hardware)
    # 37 GiB of weights: TP 2 on one node is 18.6 GiB per GPU > 14.4; TP 4 is refused by
    # the KV heads; so TP 2 x PP 2 over both nodes, and the other 2 GPUs of each node
    # hold a second replica of the same shape
    assert plan["model"]["weights_gib"] / 2 > 0.9 * 16
    assert shape(plan) == (2, 2, 2)
    assert plan["nodes_per_replica"] == 2
    assert plan["gpus_idle"] == 0
    assert plan["ray_cluster"]["worker_groups"] == [
        {"name": "gpu-workers", "replicas": 2, "gpus_per_worker": 2}
    ]
    assert_one_stage_per_node(plan, hardware)


def test_forcing_only_tp_spreads_the_stages_over_nodes():
    hardware = {"nodes": 8, "gpus_per_node": 2, "gpu_memory_gib": 40}
    plan = build_plan({"preset": "llama-3-70b"}, hardware, layout={"tensor_parallel_size": 1})
    assert plan["tensor_parallel_size"] == 1
    assert plan["nodes_per_replica"] == plan["pipeline_parallel_size"] >= 4
    assert_one_stage_per_node(plan, hardware)


# --- property: no plan puts two stages on one node unless PP was forced ---------------


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("gpus_per_node", [1, 2, 4, 8])
def test_no_plan_puts_two_stages_on_one_node(name, gpus_per_node):
    planned = 0
    for nodes in range(1, 9):
        for memory in (24, 80):
            for sequences in (None, 8):
                hardware = {"nodes": nodes, "gpus_per_node": gpus_per_node,
                            "gpu_memory_gib": memory}  # fmt: skip
                try:
                    plan = build_plan(
                        {"preset": name}, hardware, targets={"concurrent_sequences": sequences}
                    )
                except InvalidInputError as exc:
                    assert "does not fit" in str(exc)
                    continue
                planned += 1
                assert plan["tensor_parallel_size"] <= gpus_per_node
                assert_one_stage_per_node(plan, hardware)
    if name != "llama-3.1-405b":  # 405B at 131072 tokens fits none of these fleets
        assert planned > 0
