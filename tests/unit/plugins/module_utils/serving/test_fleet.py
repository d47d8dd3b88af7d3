"""The fleet planner: several models on one GPU fleet (serving/fleet.py)."""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.fleet import (
    plan_fleet,
    plan_single,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan

SITE_8X2 = {"nodes": 8, "gpus_per_node": 2, "gpu_memory_gib": 40}


def _entry(name, preset, **extra):
    return {"name": name, "model": {"preset": preset}, **extra}


def _check_consistent(result, hardware):
    """Independent arithmetic over what the planner returned: per-node GPUs never exceed
    the node, each model's node GPUs add up to its replicas x GPUs per replica, and the
    fleet totals are the sum of the models."""
    used = [0] * hardware["nodes"]
    for entry in result["plans"]:
        plan = entry["plan"]
        assert plan["gpus_used"] == plan["replicas"] * plan["gpus_per_replica"]
        assert sum(use["gpus"] for use in entry["nodes"]) == plan["gpus_used"]
        assert len(entry["nodes"]) >= plan["nodes_per_replica"]
        for use in entry["nodes"]:
            used[use["node"]] += use["gpus"]
    assert max(used) <= hardware["gpus_per_node"]
    fleet = result["fleet"]
    assert fleet["per_node"] == used
    assert fleet["gpus_used"] == sum(used)
    assert fleet["gpus_idle"] == hardware["nodes"] * hardware["gpus_per_node"] - sum(used)


def test_mixed_fleet_70b_over_nodes_and_several_8b_on_single_nodes():
    models = [
        _entry("llama-70b", "llama-3-70b"),
        _entry("llama-8b", "llama-3-8b", replicas=2),
        _entry("mistral-7b", "mistral-7b", replicas=1),
        _entry("vicuna-13b", "vicuna-13b", gpus=2),
    ]
    result = plan_fleet(models, SITE_8X2, {"concurrent_sequences": 2})
    _check_consistent(result, SITE_8X2)
    by_name = {entry["name"]: entry for entry in result["plans"]}
    assert [entry["name"] for entry in result["plans"]] == [m["name"] for m in models]
    big = by_name["llama-70b"]
    assert big["backend"] == "ray"
    assert big["plan"]["nodes_per_replica"] > 1
    assert big["plan"]["replicas"] >= 1
    # whole nodes for the model that spans them: no other model shares its nodes
    big_nodes = {use["node"] for use in big["nodes"]}
    for name in ("llama-8b", "mistral-7b", "vicuna-13b"):
        entry = by_name[name]
        assert entry["backend"] == "deployment", entry["backend_reason"]
        assert entry["plan"]["nodes_per_replica"] == 1
        assert not big_nodes & {use["node"] for use in entry["nodes"]}
    assert by_name["llama-8b"]["plan"]["replicas"] == 2
    assert by_name["mistral-7b"]["plan"]["replicas"] == 1
    vicuna = by_name["vicuna-13b"]["plan"]
    assert vicuna["replicas"] == 2 // vicuna["gpus_per_replica"]
    # the 70B (the one model without a share) takes every GPU the others leave
    assert result["fleet"]["gpus_used"] + result["fleet"]["gpus_idle"] == 16
    assert result["fleet"]["gpus_idle"] < big["plan"]["gpus_per_replica"]
    assert big["plan"]["ray_cluster"]["clusters"] == big["plan"]["replicas"]
    assert any(line.startswith("llama-70b: ray, TP") for line in result["fleet"]["summary"])


def test_a_fleet_too_small_names_the_model_and_the_gpus_short():
    models = [_entry("llama-70b", "llama-3-70b"), _entry("llama-8b", "llama-3-8b", replicas=13)]
    big = build_plan({"preset": "llama-3-70b"}, SITE_8X2)
    free_after_big = 16 - big["gpus_per_replica"]
    with pytest.raises(InvalidInputError) as info:
        plan_fleet(models, SITE_8X2)
    err = info.value
    assert err.details["model"] == "llama-8b"
    assert err.details["gpus_short"] == 13 - free_after_big
    assert err.msg.startswith("model 'llama-8b' does not fit the fleet")
    assert f"short by {13 - free_after_big} GPU(s)" in err.msg
    assert "after 'llama-70b'" in err.msg


def test_a_model_that_fits_no_layout_is_refused_with_its_memory_shortfall():
    models = [_entry("small", "llama-3-8b"), _entry("huge", "llama-3.1-405b", model_dir="h")]
    models[1]["model"]["max_model_len"] = 8192
    with pytest.raises(InvalidInputError) as info:
        plan_fleet(models, SITE_8X2)
    err = info.value
    assert err.msg.startswith("model 'huge': ")
    assert "does not fit" in err.msg and "GiB per GPU" in err.msg
    assert err.details["model"] == "huge"
    assert err.details["shortfall_gib_per_gpu"] > 10


def test_a_gpu_share_below_one_replica_is_refused_with_the_shortfall():
    with pytest.raises(InvalidInputError) as info:
        plan_fleet([_entry("llama-70b", "llama-3-70b", gpus=2)], SITE_8X2)
    needed = build_plan({"preset": "llama-3-70b"}, SITE_8X2)["gpus_per_replica"]
    assert info.value.details == {"model": "llama-70b", "gpus_short": needed - 2}
    assert f"short by {needed - 2} GPU(s)" in info.value.msg


@pytest.mark.parametrize(
    ("entry", "backend", "reason"),
    [
        (_entry("a", "llama-3-8b"), "deployment", "auto: a replica (TP 1 x PP 1 over 1 node(s))"),
        (_entry("a", "llama-3-70b"), "ray", "auto: a replica (TP 2 x PP"),
        (_entry("a", "llama-3-8b", backend="ray"), "ray", "backend ray as given"),
        (_entry("a", "llama-3-8b", backend="deployment"), "deployment", "backend deployment as"),
        (_entry("a", "llama-3-70b", backend="kserve"), "kserve", "backend kserve as given"),
        # two pipeline stages packed on one node: one node, but PP > 1 -> ray under auto
        (_entry("a", "llama-3-8b", layout={"tensor_parallel_size": 1,
                                           "pipeline_parallel_size": 2}), "ray", "auto:"),
    ],
)
def test_backend_choice(entry, backend, reason):
    planned = plan_fleet([entry], SITE_8X2)["plans"][0]
    assert planned["backend"] == backend
    assert planned["backend_reason"].startswith(reason), planned["backend_reason"]


def test_explicit_deployment_for_a_replica_over_nodes_is_refused():
    with pytest.raises(InvalidInputError) as info:
        plan_fleet([_entry("big", "llama-3-70b", backend="deployment")], SITE_8X2)
    assert "model 'big': backend deployment runs one pod per replica on one node" in info.value.msg
    assert "use backend ray" in info.value.msg


def test_kserve_for_a_tensor_parallel_group_wider_than_a_node_is_refused():
    entry = _entry("wide", "llama-3-70b", backend="kserve",
                   layout={"tensor_parallel_size": 4, "pipeline_parallel_size": 1,
                           "allow_cross_node_tp": True})
    with pytest.raises(InvalidInputError) as info:
        plan_fleet([entry], SITE_8X2)
    assert "model 'wide': backend kserve gives each pod of a replica TP GPUs" in info.value.msg
    assert "2 GPU(s) per node" in info.value.msg and "use backend ray" in info.value.msg


@pytest.mark.parametrize(
    ("model", "hardware", "targets", "layout", "topology"),
    [
        ({"preset": "llama-3-70b"}, SITE_8X2, {"concurrent_sequences": 2}, None, None),
        ({"preset": "llama-3-8b"}, SITE_8X2, None, None, "head_with_gpus"),
        ({"preset": "mixtral-8x7b", "quantization": "awq"}, SITE_8X2, None, None, None),
        ({"preset": "vicuna-13b"}, {"nodes": 3, "gpus_per_node": 4, "gpu_memory_gib": 24},
         None, None, None),
        ({"preset": "llama-3-8b"}, {"nodes": 2, "gpus_per_node": 2, "gpu_memory_gib": 80},
         None, {"tensor_parallel_size": 2, "pipeline_parallel_size": 2}, None),
        ({"preset": "llama-3-8b"}, {"nodes": 4, "gpus_per_node": 2, "gpu_memory_gib": 80},
         None, {"tensor_parallel_size": 1, "pipeline_parallel_size": 4}, None),
        ({"preset": "llama-3-70b"}, {"nodes": 5, "gpus_per_node": 1, "gpu_memory_gib": 80},
         None, None, None),
    ],
)
def test_one_model_gets_the_one_model_plan_unchanged(model, hardware, targets, layout, topology):
    before = build_plan(dict(model), hardware, targets, layout, topology)
    result = plan_fleet([{"name": "m", "model": dict(model)}], hardware, targets, layout, topology)
    assert result["plans"][0]["plan"] == before
    _check_consistent(result, hardware)


def test_the_models_own_targets_and_layout_win_over_the_fleets():
    models = [
        _entry("a", "llama-3-8b", targets={"kv_cache_tokens": 10000}, replicas=1),
        _entry("b", "llama-3-8b", model_dir="b-weights", replicas=1,
               layout={"tensor_parallel_size": 2}),
    ]
    fleet_targets = {"concurrent_sequences": 3, "gpu_memory_utilization": 0.8}
    result = plan_fleet(models, SITE_8X2, fleet_targets, {"tensor_parallel_size": 1})
    first, second = result["plans"]
    assert first["plan"]["kv_cache"]["required_tokens"] == 10000
    assert first["plan"]["memory"]["gpu_memory_utilization"] == 0.8
    assert second["plan"]["kv_cache"]["required_tokens"] == 3 * 8192
    assert (first["plan"]["tensor_parallel_size"], second["plan"]["tensor_parallel_size"]) == (1, 2)
    assert (first["model_dir"], second["model_dir"]) == ("a", "b-weights")
    # fixed replicas: nothing grows, the idle GPUs are the fleet's to report
    assert result["fleet"]["gpus_idle"] == 16 - 3
    assert result["fleet"]["warnings"] == ["13 of 16 GPUs stay idle"]
    assert not any("stay idle" in w for w in first["plan"]["warnings"])


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([], "give at least one model"),
        ([{"model": {"preset": "llama-3-8b"}}], "models[0]: name (the served model name)"),
        ([_entry("a", "llama-3-8b"), _entry("a", "mistral-7b", model_dir="x")],
         "'a' is given twice"),
        ([_entry("a", "llama-3-8b"), _entry("b", "mistral-7b", model_dir="a")],
         "two models use the directory 'a'"),
        ([_entry("a", "llama-3-8b", replicas=1, gpus=2)], "give replicas or gpus, not both"),
        ([_entry("a", "llama-3-8b", replicas=0)], "replicas must be a whole number >= 1"),
        ([_entry("a", "llama-3-8b", backend="knative")], "backend 'knative' is not one of"),
        ([{"name": "a"}], "model 'a': model (the planner inputs"),
    ],
)
def test_bad_entries_are_refused(models, message):
    with pytest.raises(InvalidInputError) as info:
        plan_fleet(models, SITE_8X2)
    assert message in info.value.msg


def test_free_gpus_spread_over_nodes_are_named_as_such():
    # two attention heads cap TP at 2: the 30B model spans both nodes with 2 GPUs on each,
    # leaving 2 + 2 free GPUs where the TP 4 model needs one node with 4
    narrow = {"parameters": 30e9, "num_layers": 32, "num_attention_heads": 2,
              "num_kv_heads": 2, "hidden_size": 4096, "vocab_size": 32000,
              "intermediate_size": 14336, "max_model_len": 4096, "dtype": "bfloat16"}
    models = [{"name": "narrow", "model": narrow},
              _entry("wide", "llama-3-8b", layout={"tensor_parallel_size": 4})]
    models[1]["model"]["max_model_len"] = 4096
    with pytest.raises(InvalidInputError) as info:
        plan_fleet(models, {"nodes": 2, "gpus_per_node": 4, "gpu_memory_gib": 24})
    assert info.value.details == {"model": "wide", "gpus_short": 0, "gpus_needed": 4,
                                  "gpus_free": 4}
    assert "spread too thin (free per node: [2, 2])" in info.value.msg


def test_the_one_model_form_is_named_after_its_model_and_refuses_as_before():
    [entry] = plan_single({"preset": "mistral-7b"}, SITE_8X2)["plans"]
    assert (entry["name"], entry["model_dir"]) == ("mistral-7b", "mistral-7b")
    assert plan_single({"preset": "mistral-7b", "name": "m"}, SITE_8X2)["plans"][0]["name"] == "m"
    too_big = {"preset": "llama-3.1-405b", "name": "huge", "max_model_len": 8192}
    with pytest.raises(InvalidInputError) as before:
        build_plan(dict(too_big), SITE_8X2)
    with pytest.raises(InvalidInputError) as now:
        plan_single(dict(too_big), SITE_8X2)
    assert now.value.msg == before.value.msg and now.value.details == before.value.details
