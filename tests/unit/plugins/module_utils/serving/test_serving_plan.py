"""The layout planner's cases from the seeds, the rules, and bad input (serving/plan.py)."""

from __future__ import annotations

import json

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.presets import PRESETS

# Seed 000: 8 ESXi hosts x 2 GPUs, one worker VM per host, no NVLink between nodes.
SITE_8X2 = {"nodes": 8, "gpus_per_node": 2, "gpu_memory_gib": 40, "nvlink": False, "rdma": False}
# Seed 001: 8 x AWS g5.4xlarge, one A10G 24 GiB each.
A10G_8X1 = {"nodes": 8, "gpus_per_node": 1, "gpu_memory_gib": 24, "gpu_model": "A10G"}
# An explicit model whose 6 KV heads cannot be split 4 ways.
SMALL_GQA = {
    "name": "small-gqa",
    "parameters": 1e9,
    "num_layers": 12,
    "num_attention_heads": 12,
    "num_kv_heads": 6,
    "hidden_size": 768,
    "max_model_len": 2048,
}


def check_invariants(plan, hardware):
    """Recompute what every plan must satisfy, independently of the planner's code."""
    model = PRESETS.get(plan["model"]["name"], plan["model"])
    tp, pp = plan["tensor_parallel_size"], plan["pipeline_parallel_size"]
    assert model["num_attention_heads"] % tp == 0
    kv = model["num_kv_heads"]
    assert kv % tp == 0 or tp % kv == 0
    assert pp <= model["num_layers"]
    assert plan["replicas"] * tp * pp <= hardware["nodes"] * hardware["gpus_per_node"]
    assert plan["gpus_used"] + plan["gpus_idle"] == hardware["nodes"] * hardware["gpus_per_node"]
    budget = plan["memory"]["gpu_memory_utilization"] * hardware["gpu_memory_gib"]
    assert len(plan["memory"]["per_gpu"]) == pp
    assert sum(stage["layers"] for stage in plan["memory"]["per_gpu"]) == model["num_layers"]
    for stage in plan["memory"]["per_gpu"]:
        used = stage["weights_gib"] + stage["overhead_gib"] + stage["kv_cache_gib"]
        assert used == pytest.approx(budget, abs=0.02)
        assert stage["kv_cache_gib"] > 0
        assert (
            stage["kv_capacity_tokens"] * stage["kv_bytes_per_token"]
            <= (stage["kv_cache_gib"] + 0.01) * 2**30
        )
    assert plan["kv_cache"]["capacity_tokens"] >= plan["kv_cache"]["required_tokens"]
    ray = plan["ray_cluster"]
    gpus_in_cluster = ray["head_gpus"] + sum(
        group["replicas"] * group["gpus_per_worker"] for group in ray["worker_groups"]
    )
    assert gpus_in_cluster == tp * pp == ray["gpus_per_cluster"]
    assert ray["clusters"] == plan["replicas"]
    json.dumps(plan)  # the module returns it as JSON


def args_of(plan):
    args = plan["vllm_args"]
    return dict(zip(args[::2], args[1::2], strict=False))


# --- seed 000: 16 GPUs as 8 nodes x 2, no NVLink between nodes -------------------------


def test_seed_000_llama_3_70b_keeps_tp_inside_the_node_never_tp_16():
    plan = build_plan({"preset": "llama-3-70b"}, SITE_8X2)
    check_invariants(plan, SITE_8X2)
    assert plan["tensor_parallel_size"] == 2
    assert plan["pipeline_parallel_size"] >= 2
    assert plan["replicas"] * plan["nodes_per_replica"] <= 8
    args = args_of(plan)
    assert args["--tensor-parallel-size"] == "2"
    assert args["--distributed-executor-backend"] == "ray"
    assert args["--pipeline-parallel-size"] == str(plan["pipeline_parallel_size"])


def test_seed_000_tp_16_is_refused_unless_forced_across_nodes():
    with pytest.raises(InvalidInputError) as info:
        build_plan({"preset": "llama-3-70b"}, SITE_8X2, layout={"tensor_parallel_size": 16})
    assert "spans nodes" in str(info.value)
    assert "allow_cross_node_tp" in str(info.value)


def test_cross_node_tp_when_forced_and_allowed_warns():
    plan = build_plan(
        {"preset": "llama-3-70b"},
        SITE_8X2,
        layout={"tensor_parallel_size": 16, "allow_cross_node_tp": True},
    )
    assert plan["tensor_parallel_size"] == 16
    assert plan["pipeline_parallel_size"] == 1
    assert plan["nodes_per_replica"] == 8
    assert plan["ray_cluster"]["worker_groups"] == [
        {"name": "gpu-workers", "replicas": 8, "gpus_per_worker": 2}
    ]
    assert any("spans nodes" in w for w in plan["warnings"])
    assert any("without RDMA" in w for w in plan["warnings"])
    assert any("replicates" in w for w in plan["warnings"])  # TP 16 > 8 KV heads


def test_seed_000_topology_with_vllm_in_a_gpu_head_pod():
    plan = build_plan({"preset": "llama-3-70b"}, SITE_8X2, topology="head_with_gpus")
    check_invariants(plan, SITE_8X2)
    ray = plan["ray_cluster"]
    assert ray["head_gpus"] == SITE_8X2["gpus_per_node"]
    assert ray["worker_groups"][0]["replicas"] == plan["nodes_per_replica"] - 1
    assert ray["pods"] == plan["nodes_per_replica"]


def test_default_topology_has_a_head_without_gpus_and_one_worker_per_node():
    plan = build_plan({"preset": "llama-3-70b"}, SITE_8X2)
    ray = plan["ray_cluster"]
    assert plan["topology"] == "head_without_gpus"
    assert ray["head_gpus"] == 0
    assert ray["worker_groups"] == [
        {"name": "gpu-workers", "replicas": plan["nodes_per_replica"], "gpus_per_worker": 2}
    ]
    assert ray["pods"] == plan["nodes_per_replica"] + 1


def test_kv_headroom_drives_the_layout():
    small = build_plan({"preset": "llama-3-70b"}, SITE_8X2)
    big = build_plan({"preset": "llama-3-70b"}, SITE_8X2, targets={"concurrent_sequences": 8})
    check_invariants(big, SITE_8X2)
    assert big["kv_cache"]["required_tokens"] == 8 * 8192
    assert big["gpus_per_replica"] > small["gpus_per_replica"]
    assert big["kv_cache"]["capacity_tokens"] >= 8 * 8192
    assert big["tensor_parallel_size"] == 2


# --- seed 002: a 13B model that fits one 40 GB GPU -> TP=1 and replicas ----------------


@pytest.mark.parametrize("utilization", [0.9, 0.7])
def test_seed_002_vicuna_13b_on_40gb_is_tp_1_with_replicas(utilization):
    plan = build_plan(
        {"preset": "vicuna-13b"}, SITE_8X2, targets={"gpu_memory_utilization": utilization}
    )
    check_invariants(plan, SITE_8X2)
    assert plan["tensor_parallel_size"] == 1
    assert plan["pipeline_parallel_size"] == 1
    assert plan["replicas"] == 16
    assert "--distributed-executor-backend" not in plan["vllm_args"]


def test_seed_002_four_single_gpu_pods():
    hardware = {"nodes": 4, "gpus_per_node": 1, "gpu_memory_gib": 40}
    plan = build_plan({"preset": "vicuna-13b"}, hardware)
    check_invariants(plan, hardware)
    assert (plan["tensor_parallel_size"], plan["replicas"]) == (1, 4)


def test_tp_inside_a_node_is_preferred_over_pp_when_one_gpu_is_too_small():
    hardware = {"nodes": 8, "gpus_per_node": 2, "gpu_memory_gib": 16}
    plan = build_plan({"preset": "llama-3-8b"}, hardware)
    check_invariants(plan, hardware)
    assert (plan["tensor_parallel_size"], plan["pipeline_parallel_size"]) == (2, 1)
    assert plan["replicas"] == 8
    assert plan["nodes_per_replica"] == 1
    assert any("without NVLink" in w for w in plan["warnings"])
    with_nvlink = build_plan({"preset": "llama-3-8b"}, {**hardware, "nvlink": True})
    assert not any("NVLink" in w for w in with_nvlink["warnings"])


# --- seed 001: Mixtral 8x7B on 8 nodes x 1 A10G 24 GB ----------------------------------


def test_seed_001_mixtral_on_eight_a10g_fits_with_pipeline_parallelism():
    plan = build_plan({"preset": "mixtral-8x7b"}, A10G_8X1)
    check_invariants(plan, A10G_8X1)
    assert plan["tensor_parallel_size"] == 1
    assert plan["pipeline_parallel_size"] >= 2
    assert plan["nodes_per_replica"] == plan["pipeline_parallel_size"]
    assert args_of(plan)["--distributed-executor-backend"] == "ray"
    assert any("MoE" in w for w in plan["warnings"])


def test_seed_001_mixtral_with_a_shorter_context_gets_more_headroom():
    plan = build_plan(
        {"preset": "mixtral-8x7b", "max_model_len": 4096},
        A10G_8X1,
        targets={"concurrent_sequences": 4},
    )
    check_invariants(plan, A10G_8X1)
    assert plan["pipeline_parallel_size"] >= 2
    assert args_of(plan)["--max-model-len"] == "4096"


# --- refusals ---------------------------------------------------------------------------


def test_a_model_that_cannot_fit_16_gpus_is_refused_with_the_shortfall():
    with pytest.raises(InvalidInputError) as info:
        build_plan({"preset": "llama-3.1-405b", "max_model_len": 8192}, SITE_8X2)
    message = str(info.value)
    assert "does not fit 8 nodes x 2 GPUs of 40 GiB" in message
    assert "TP 2 x PP 8" in message
    assert "short by" in message
    short = info.value.details["shortfall_gib_per_gpu"]
    # independent: 405.85B bf16 over 16 GPUs vs a 36 GiB budget per GPU
    assert short > 405.85e9 * 2 / 16 / 2**30 - 36
    assert info.value.details["closest_layout"] == {
        "tensor_parallel_size": 2,
        "pipeline_parallel_size": 8,
    }


def test_kv_cache_that_cannot_fit_is_refused_in_tokens():
    hardware = {"nodes": 1, "gpus_per_node": 1, "gpu_memory_gib": 40}
    with pytest.raises(InvalidInputError) as info:
        build_plan({"preset": "vicuna-13b"}, hardware, targets={"kv_cache_tokens": 100_000})
    message = str(info.value)
    assert "KV cache does not fit" in message
    assert "100000 are required" in message
    assert info.value.details["shortfall_tokens"] > 80_000


def test_forced_layout_that_does_not_fit_is_refused():
    with pytest.raises(InvalidInputError, match="short by"):
        build_plan(
            {"preset": "llama-3-70b"},
            SITE_8X2,
            layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 1},
        )
    # forcing only TP leaves PP free: TP 1 then needs more stages, and fits
    plan = build_plan({"preset": "llama-3-70b"}, SITE_8X2, layout={"tensor_parallel_size": 1})
    check_invariants(plan, SITE_8X2)
    assert plan["tensor_parallel_size"] == 1
    assert plan["pipeline_parallel_size"] >= 4


@pytest.mark.parametrize(
    "model, hardware, targets, layout, topology, message",
    [
        ({"preset": "llama-3-8b"}, {**SITE_8X2, "gpus_per_node": 0}, None, None, None,
         "hardware.gpus_per_node must be at least 1, got 0"),
        ({"preset": "llama-3-8b"}, {**SITE_8X2, "nodes": 0}, None, None, None,
         "hardware.nodes must be at least 1"),
        ({"preset": "llama-3-8b"}, {"nodes": 1, "gpus_per_node": 1}, None, None, None,
         "hardware.gpu_memory_gib is required"),
        ({"preset": "llama-3-8b"}, {**SITE_8X2, "gpu_memory_gib": -4}, None, None, None,
         "hardware.gpu_memory_gib must be a positive number"),
        ({"preset": "llama-3-8b"}, SITE_8X2, None, {"tensor_parallel_size": 3}, None,
         "layout.tensor_parallel_size 3 does not divide the 32 attention heads of llama-3-8b"),
        (SMALL_GQA, {**SITE_8X2, "gpus_per_node": 4}, None, {"tensor_parallel_size": 4}, None,
         "layout.tensor_parallel_size 4 does not split the 6 KV heads evenly"),
        ({"preset": "llama-3-8b"}, SITE_8X2, None, {"pipeline_parallel_size": 33}, None,
         "layout.pipeline_parallel_size 33 exceeds the 32 layers of llama-3-8b"),
        ({"preset": "llama-3-8b"}, {**SITE_8X2, "nodes": 2}, None,
         {"tensor_parallel_size": 2, "pipeline_parallel_size": 4}, None,
         "layout needs 8 GPUs (TP 2 x PP 4) but the hardware has 4"),
        ({"preset": "llama-3-8b"}, SITE_8X2, None,
         {"tensor_parallel_size": 1, "pipeline_parallel_size": 3}, None,
         "must use whole nodes"),
        ({"preset": "vicuna-13b"}, {**SITE_8X2, "gpus_per_node": 4}, None,
         {"tensor_parallel_size": 10, "allow_cross_node_tp": True}, None,
         "must be a multiple of the 4 GPUs per node"),
        ({"preset": "vicuna-13b"}, {**SITE_8X2, "gpus_per_node": 8}, None,
         {"tensor_parallel_size": 5}, None,
         "layout.tensor_parallel_size 5 must divide the 8 GPUs per node"),
        ({"preset": "llama-3-8b"}, SITE_8X2, {"gpu_memory_utilization": 1.5}, None, None,
         "targets.gpu_memory_utilization must be in (0, 1]"),
        ({"preset": "llama-3-8b"}, SITE_8X2, {"kv_cache_tokens": 100, "concurrent_sequences": 2},
         None, None, "not both"),
        ({"preset": "llama-3-8b"}, SITE_8X2, {"kv_cache_tokens": 100}, None, None,
         "kv_cache_tokens 100 is below max_model_len 8192"),
        ({"preset": "llama-3-8b"}, SITE_8X2, {"kv_cache_dtype": "int4"}, None, None,
         "targets.kv_cache_dtype 'int4'"),
        ({"preset": "llama-3-8b"}, SITE_8X2, None, None, "mixed",
         "topology 'mixed' is not one of"),
        ({"preset": "no-such-model"}, SITE_8X2, None, None, None,
         "model.preset 'no-such-model' is unknown"),
        ({"preset": "llama-3-8b"}, SITE_8X2, None, {"tensor_parallel_size": 0}, None,
         "layout.tensor_parallel_size must be at least 1, got 0"),
        ({"preset": "llama-3-8b"}, SITE_8X2, None, {"pipeline_parallel_size": 0}, None,
         "layout.pipeline_parallel_size must be at least 1, got 0"),
        ({"preset": "llama-3-8b"}, SITE_8X2, {"concurrent_sequences": 0}, None, None,
         "targets.concurrent_sequences must be at least 1, got 0"),
    ],
)  # fmt: skip
def test_bad_input_fails_with_a_message_naming_the_problem(
    model, hardware, targets, layout, topology, message
):
    with pytest.raises(InvalidInputError) as info:
        build_plan(model, hardware, targets, layout, topology)
    assert message in str(info.value)


# --- output details ---------------------------------------------------------------------


def test_vllm_args_for_a_quantized_model_with_fp8_kv_cache():
    plan = build_plan(
        {"preset": "llama-3-70b", "quantization": "awq"},
        SITE_8X2,
        targets={"kv_cache_dtype": "fp8", "max_num_batched_tokens": 4096},
    )
    check_invariants(plan, SITE_8X2)
    assert plan["vllm_args"][-6:] == [
        "--quantization",
        "awq",
        "--kv-cache-dtype",
        "fp8",
        "--max-num-batched-tokens",
        "4096",
    ]
    assert plan["kv_cache"]["dtype"] == "fp8"
    assert plan["gpus_per_replica"] == 2  # AWQ 70B (~37 GiB) fits 2 x 40 GB


def test_single_gpu_plan_in_full():
    plan = build_plan({"preset": "llama-3-8b"}, SITE_8X2)
    check_invariants(plan, SITE_8X2)
    assert plan["vllm_args"] == [
        "--tensor-parallel-size", "1",
        "--pipeline-parallel-size", "1",
        "--max-model-len", "8192",
        "--gpu-memory-utilization", "0.9",
        "--dtype", "bfloat16",
    ]  # fmt: skip
    assert (plan["replicas"], plan["gpus_idle"]) == (16, 0)
    assert plan["kv_cache"]["bytes_per_token"] == 131072
    assert (
        plan["kv_cache"]["max_concurrent_sequences"] == plan["kv_cache"]["capacity_tokens"] // 8192
    )
    assert plan["model"]["weights_gib"] == pytest.approx(8.03e9 * 2 / 2**30, abs=0.01)
    assert plan["warnings"] == []
    assert plan["summary"][2] == "layout: TP 1 x PP 1 x 16 replicas (16 of 16 GPUs)"
    assert plan["summary"][-1].startswith("vllm: --tensor-parallel-size 1")


def test_idle_gpus_are_reported():
    plan = build_plan({"preset": "llama-3-70b"}, SITE_8X2, targets={"concurrent_sequences": 8})
    if plan["gpus_idle"]:
        assert any(f"{plan['gpus_idle']} of 16 GPUs stay idle" in w for w in plan["warnings"])
    odd = {"nodes": 3, "gpus_per_node": 2, "gpu_memory_gib": 40}
    plan = build_plan({"preset": "llama-3-70b"}, odd)
    check_invariants(plan, odd)
    assert plan["gpus_idle"] == 2
    assert any("2 of 6 GPUs stay idle" in w for w in plan["warnings"])


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize(
    "hardware",
    [
        SITE_8X2,
        A10G_8X1,
        {"nodes": 2, "gpus_per_node": 8, "gpu_memory_gib": 80, "nvlink": True},
        {"nodes": 4, "gpus_per_node": 4, "gpu_memory_gib": 48},
    ],
)
def test_every_plan_satisfies_the_invariants(name, hardware):
    try:
        plan = build_plan({"preset": name}, hardware)
    except InvalidInputError as exc:
        assert "does not fit" in str(exc)
        return
    check_invariants(plan, hardware)
    assert plan["tensor_parallel_size"] <= hardware["gpus_per_node"]


def test_thin_kv_margin_is_flagged():
    tight = build_plan({"preset": "llama-3-70b"}, SITE_8X2)
    assert tight["memory"]["kv_cache_per_gpu_gib"] < 3.6
    assert any(w.startswith("thin margin") for w in tight["warnings"])
    roomy = build_plan({"preset": "llama-3-70b"}, SITE_8X2, targets={"concurrent_sequences": 8})
    assert not any(w.startswith("thin margin") for w in roomy["warnings"])
