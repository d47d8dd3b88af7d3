"""Runs the serving_plan module's main() with arguments and reads its JSON result."""

from __future__ import annotations

import json

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args
from ansible_collections.llmops.gpu_stack.plugins.modules import serving_plan

SITE_8X2 = {"nodes": 8, "gpus_per_node": 2, "gpu_memory_gib": 40}


def run_module(capsys, args):
    """Run main() with args; return (exit code, result dict)."""
    with patch_module_args(args), pytest.raises(SystemExit) as info:
        serving_plan.main()
    return info.value.code, json.loads(capsys.readouterr().out)


def test_plan_for_the_reference_site(capsys):
    code, result = run_module(capsys, {"model": {"preset": "llama-3-70b"}, "hardware": SITE_8X2})
    assert code == 0
    assert result["changed"] is False
    plan = result["plan"]
    assert plan["tensor_parallel_size"] == 2
    assert plan["pipeline_parallel_size"] >= 2
    assert plan["topology"] == "head_without_gpus"
    assert "--distributed-executor-backend" in plan["vllm_args"]
    assert plan["summary"][0].startswith("model: llama-3-70b")


def test_check_mode_gives_the_same_unchanged_plan(capsys):
    args = {"model": {"preset": "vicuna-13b"}, "hardware": SITE_8X2}
    _code, normal = run_module(capsys, args)
    code, checked = run_module(capsys, {**args, "_ansible_check_mode": True})
    assert code == 0
    assert checked["changed"] is False
    assert checked["plan"] == normal["plan"]
    assert checked["plan"]["tensor_parallel_size"] == 1


def test_config_path_option(capsys, tmp_path):
    config = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": 2048,
        "max_position_embeddings": 512,
        "torch_dtype": "bfloat16",
    }
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    code, result = run_module(
        capsys,
        {
            "model": {"config_path": str(tmp_path)},
            "hardware": {"nodes": 1, "gpus_per_node": 1, "gpu_memory_gib": 1},
            "targets": {"gpu_memory_utilization": 0.5, "overhead_gib": 0.1},
        },
    )
    assert code == 0
    plan = result["plan"]
    assert plan["model"]["source"] == "config.json"
    assert plan["model"]["num_layers"] == 2
    assert plan["replicas"] == 1
    assert "--max-model-len" in plan["vllm_args"]


def test_planner_refusal_becomes_fail_json_with_details(capsys):
    code, result = run_module(
        capsys,
        {"model": {"preset": "llama-3.1-405b", "max_model_len": 8192}, "hardware": SITE_8X2},
    )
    assert code == 1
    assert result["failed"] is True
    assert "does not fit" in result["msg"]
    assert result["shortfall_gib_per_gpu"] > 10
    assert result["closest_layout"]["pipeline_parallel_size"] == 8


@pytest.mark.parametrize(
    "args, message",
    [
        (
            {"model": {"preset": "llama-9000"}, "hardware": SITE_8X2},
            "value of preset must be one of",
        ),
        (
            {"model": {"preset": "llama-3-8b", "num_layers": 3}, "hardware": SITE_8X2},
            "mutually exclusive",
        ),
        (
            {"model": {"max_model_len": 10}, "hardware": SITE_8X2},
            "one of the following is required: preset, config_path, num_layers",
        ),
        (
            {"model": {"preset": "llama-3-8b"}, "hardware": {"nodes": 8, "gpus_per_node": 2}},
            "missing required arguments: gpu_memory_gib",
        ),
        (
            {
                "model": {"preset": "llama-3-8b"},
                "hardware": SITE_8X2,
                "targets": {"kv_cache_tokens": 9000, "concurrent_sequences": 2},
            },
            "mutually exclusive",
        ),
        (
            {"model": {"preset": "llama-3-8b"}, "hardware": {**SITE_8X2, "gpus_per_node": 0}},
            "hardware.gpus_per_node must be at least 1, got 0",
        ),
        (
            {
                "model": {"preset": "llama-3-8b"},
                "hardware": SITE_8X2,
                "layout": {"tensor_parallel_size": 3},
            },
            "does not divide the 32 attention heads",
        ),
        (
            {"model": {"preset": "llama-3-8b"}, "hardware": SITE_8X2, "topology": "mixed"},
            "value of topology must be one of",
        ),
    ],
)
def test_bad_input_is_refused_by_ansible_or_the_planner(capsys, args, message):
    code, result = run_module(capsys, args)
    assert code == 1
    assert message in result["msg"]


def _doc_options(options):
    """Doc options as an argument-spec-like dict (type, choices, default, required)."""
    spec = {}
    for name, doc in options.items():
        entry = {"type": doc["type"]}
        for key in ("choices", "default", "required"):
            if key in doc and doc[key] not in (None, False):
                entry[key] = doc[key]
        if "suboptions" in doc:
            entry["options"] = _doc_options(doc["suboptions"])
        spec[name] = entry
    return spec


def _spec_options(spec):
    out = {}
    for name, arg in spec.items():
        entry = {"type": arg["type"]}
        for key in ("choices", "default", "required"):
            if key in arg and arg[key] not in (None, False):
                entry[key] = arg[key]
        if "options" in arg:
            entry["options"] = _spec_options(arg["options"])
        out[name] = entry
    return out


def test_documentation_and_argument_spec_agree():
    doc = yaml.safe_load(serving_plan.DOCUMENTATION)
    documented = _doc_options(doc["options"])
    declared = _spec_options(serving_plan.argument_spec())
    for entry in (documented, declared):
        preset = entry["model"]["options"]["preset"]
        preset["choices"] = sorted(preset["choices"])
    assert documented == declared
    yaml.safe_load(serving_plan.EXAMPLES)
    yaml.safe_load(serving_plan.RETURN)


def test_one_model_returns_a_one_entry_plans_list_with_the_same_plan(capsys):
    code, result = run_module(capsys, {"model": {"preset": "llama-3-70b"}, "hardware": SITE_8X2})
    assert code == 0
    [entry] = result["plans"]
    assert entry["plan"] == result["plan"]
    assert (entry["name"], entry["model_dir"], entry["backend"]) == (
        "llama-3-70b", "llama-3-70b", "ray")
    assert sum(use["gpus"] for use in entry["nodes"]) == result["plan"]["gpus_used"]
    assert result["fleet"]["gpus_used"] == result["plan"]["gpus_used"]


def test_models_option_plans_the_fleet_as_a_whole(capsys):
    args = {
        "models": [
            {"name": "big", "model": {"preset": "llama-3-70b"}},
            {"name": "small", "model": {"preset": "llama-3-8b", "max_model_len": 4096},
             "replicas": 2, "targets": {"kv_cache_tokens": 8192}},
        ],
        "hardware": SITE_8X2,
        "targets": {"concurrent_sequences": 2},
    }
    code, result = run_module(capsys, args)
    assert code == 0, result.get("msg")
    big, small = result["plans"]
    assert result["plan"] == big["plan"]
    assert (big["backend"], small["backend"]) == ("ray", "deployment")
    assert small["plan"]["replicas"] == 2
    assert small["plan"]["kv_cache"]["required_tokens"] == 8192
    # the module's defaults of the fleet-wide targets (0.9) reach the model; a model's own
    # targets carry no defaults that would override the fleet's
    assert small["plan"]["memory"]["gpu_memory_utilization"] == 0.9
    assert big["plan"]["kv_cache"]["required_tokens"] == 2 * 8192
    assert result["fleet"]["gpus_used"] == big["plan"]["gpus_used"] + 2


def test_a_models_own_utilization_wins_over_the_fleets(capsys):
    args = {"models": [{"name": "a", "model": {"preset": "llama-3-8b"}, "replicas": 1,
                        "targets": {"gpu_memory_utilization": 0.7}},
                       {"name": "b", "model": {"preset": "llama-3-8b"}, "replicas": 1}],
            "hardware": SITE_8X2, "targets": {"gpu_memory_utilization": 0.8}}
    code, result = run_module(capsys, args)
    assert code == 0, result.get("msg")
    assert [p["plan"]["memory"]["gpu_memory_utilization"] for p in result["plans"]] == [0.7, 0.8]


def test_a_fleet_refusal_becomes_fail_json_naming_the_model(capsys):
    code, result = run_module(capsys, {
        "models": [{"name": "big", "model": {"preset": "llama-3-70b"}},
                   {"name": "many", "model": {"preset": "llama-3-8b"}, "replicas": 15}],
        "hardware": SITE_8X2})
    assert code == 1
    assert result["msg"].startswith("model 'many' does not fit the fleet")
    assert result["model"] == "many" and result["gpus_short"] == 3


@pytest.mark.parametrize(
    "args, message",
    [
        ({"model": {"preset": "llama-3-8b"}, "hardware": SITE_8X2,
          "models": [{"name": "a", "model": {"preset": "llama-3-8b"}}]},
         "parameters are mutually exclusive: model|models"),
        ({"hardware": SITE_8X2}, "one of the following is required: model, models"),
        ({"models": [{"model": {"preset": "llama-3-8b"}}], "hardware": SITE_8X2},
         "missing required arguments: name found in models"),
        ({"models": [{"name": "a"}], "hardware": SITE_8X2},
         "missing required arguments: model found in models"),
        ({"models": [{"name": "a", "model": {"preset": "llama-3-8b"}, "replicas": 1, "gpus": 2}],
          "hardware": SITE_8X2},
         "parameters are mutually exclusive: replicas|gpus found in models"),
        ({"models": [{"name": "a", "model": {"preset": "llama-3-8b"}, "backend": "knative"}],
          "hardware": SITE_8X2}, "value of backend must be one of: auto, ray, deployment"),
        ({"models": [{"name": "a", "model": {"preset": "llama-3-8b", "num_layers": 2}}],
          "hardware": SITE_8X2}, "mutually exclusive"),
        ({"models": [{"name": "a", "model": {"preset": "llama-3-70b"}, "backend": "deployment"}],
          "hardware": SITE_8X2}, "backend deployment runs one pod per replica on one node"),
    ],
)
def test_bad_models_input_is_refused(capsys, args, message):
    code, result = run_module(capsys, args)
    assert code == 1
    assert message in result["msg"], result["msg"]
