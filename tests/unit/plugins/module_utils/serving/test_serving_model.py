"""Tests for the model description: presets, config.json, explicit fields (serving/model.py)."""

from __future__ import annotations

import json

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.model import (
    estimate_parameters,
    model_from_options,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.presets import PRESETS

# A config.json as Hugging Face publishes it for Meta-Llama-3-8B (the fields we read).
LLAMA3_8B_CONFIG = {
    "_name_or_path": "meta-llama/Meta-Llama-3-8B",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}


def write_config(tmp_path, config, name="config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_counts_agree_with_their_architecture(name):
    facts = PRESETS[name]
    counted = estimate_parameters(
        facts["num_layers"],
        facts["hidden_size"],
        facts["num_attention_heads"],
        facts["num_kv_heads"],
        facts["hidden_size"] // facts["num_attention_heads"],
        facts["vocab_size"],
        facts["intermediate_size"],
        facts.get("num_experts", 0),
        facts["tie_word_embeddings"],
    )
    assert abs(counted - facts["parameters"]) / facts["parameters"] < 0.01


def test_preset_facts_that_the_seeds_rely_on():
    assert PRESETS["llama-3-70b"]["num_kv_heads"] == 8
    assert PRESETS["llama-3-70b"]["num_layers"] == 80
    assert PRESETS["mixtral-8x7b"]["num_experts"] == 8
    assert PRESETS["mixtral-8x7b"]["num_experts_per_token"] == 2
    assert PRESETS["vicuna-13b"]["num_kv_heads"] == PRESETS["vicuna-13b"]["num_attention_heads"]
    assert PRESETS["vicuna-13b"]["hf_repo"] == "lmsys/vicuna-13b-v1.3"


def test_preset_builds_a_spec_with_derived_sizes():
    spec, warnings = model_from_options({"preset": "llama-3-8b"}, PRESETS)
    assert warnings == []
    assert spec.source == "preset:llama-3-8b"
    assert spec.name == "llama-3-8b"
    assert spec.head_dim == 128
    assert spec.embedding_params == 128256 * 4096
    assert spec.lm_head_params == 128256 * 4096
    assert spec.weight_bytes_per_param == 2
    layer = (8.03e9 - 2 * 128256 * 4096) / 32
    assert spec.params_per_layer == pytest.approx(layer)


def test_serving_overrides_apply_to_a_preset():
    spec, _warnings = model_from_options(
        {"preset": "llama-3-8b", "max_model_len": 4096, "quantization": "awq", "name": "l3"},
        PRESETS,
    )
    assert spec.max_model_len == 4096
    assert spec.quantization == "awq"
    assert spec.name == "l3"
    assert spec.weight_bytes_per_param == pytest.approx(0.52)
    assert spec.dense_bytes_per_param == 2


def test_config_json_gives_the_same_spec_as_the_preset(tmp_path):
    path = write_config(tmp_path, LLAMA3_8B_CONFIG)
    spec, warnings = model_from_options({"config_path": str(path)}, PRESETS)
    preset, _warnings = model_from_options({"preset": "llama-3-8b"}, PRESETS)
    assert warnings == []
    assert spec.source == "config.json"
    assert spec.name == "meta-llama/Meta-Llama-3-8B"
    for field in ("num_layers", "num_attention_heads", "num_kv_heads", "hidden_size"):
        assert getattr(spec, field) == getattr(preset, field)
    assert spec.max_model_len == 8192
    assert spec.dtype == "bfloat16"
    assert spec.parameters == pytest.approx(8.03e9, rel=0.005)


def test_config_path_may_be_the_model_directory(tmp_path):
    write_config(tmp_path, LLAMA3_8B_CONFIG)
    spec, _warnings = model_from_options({"config_path": str(tmp_path)}, PRESETS)
    assert spec.num_layers == 32


def test_config_json_moe_quantized_nested_and_defaults(tmp_path):
    config = {
        "architectures": ["MixtralForCausalLM"],
        "text_config": {
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "num_local_experts": 8,
            "num_experts_per_tok": 2,
            "vocab_size": 32000,
            "max_position_embeddings": 32768,
        },
        "dtype": "float16",
        "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128},
    }
    spec, _warnings = model_from_options(
        {"config_path": str(write_config(tmp_path, config))}, PRESETS
    )
    assert spec.name == "MixtralForCausalLM"
    assert spec.num_experts == 8
    assert spec.num_experts_per_token == 2
    assert spec.quantization == "awq"
    assert spec.weight_bytes_per_param == pytest.approx(4.16 / 8)
    assert spec.dtype == "float16"
    assert spec.parameters == pytest.approx(46.7e9, rel=0.01)


def test_config_json_without_kv_heads_means_multi_head_attention(tmp_path):
    config = {k: v for k, v in LLAMA3_8B_CONFIG.items() if k != "num_key_value_heads"}
    spec, _warnings = model_from_options(
        {"config_path": str(write_config(tmp_path, config))}, PRESETS
    )
    assert spec.num_kv_heads == 32


def test_float32_checkpoint_is_served_as_bfloat16_unless_told(tmp_path):
    path = str(write_config(tmp_path, {**LLAMA3_8B_CONFIG, "torch_dtype": "float32"}))
    spec, warnings = model_from_options({"config_path": path}, PRESETS)
    assert spec.dtype == "bfloat16"
    assert "float32" in warnings[0]
    spec, warnings = model_from_options({"config_path": path, "dtype": "float32"}, PRESETS)
    assert spec.dtype == "float32"
    assert warnings == []


def test_explicit_fields_with_parameters_only():
    spec, _warnings = model_from_options(
        {
            "parameters": 13e9,
            "num_layers": 40,
            "num_attention_heads": 40,
            "hidden_size": 5120,
            "dtype": "fp16",
            "max_model_len": 2048,
        },
        PRESETS,
    )
    assert spec.source == "explicit"
    assert spec.dtype == "float16"
    assert spec.num_kv_heads == 40
    assert spec.params_per_layer == pytest.approx(13e9 / 40)


def test_explicit_parameters_far_from_the_architecture_warn():
    _spec, warnings = model_from_options(
        {**{k: v for k, v in PRESETS["llama-3-8b"].items() if k != "hf_repo"}, "parameters": 20e9},
        PRESETS,
    )
    assert any("differs" in w for w in warnings)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"preset": "llama-9000"}, "model.preset 'llama-9000' is unknown; known presets: "),
        ({}, "give one of preset, config_path or the architecture fields"),
        ({"preset": "llama-3-8b", "config_path": "x"}, "not both"),
        ({"preset": "llama-3-8b", "num_layers": 3}, "cannot be combined with preset"),
        ({"preset": "llama-3-8b", "parameters": 1e9}, "parameters cannot be combined"),
        ({"preset": "llama-3-8b", "quantization": "int3"}, "quantization 'int3' is not supported"),
        ({"preset": "llama-3-8b", "dtype": "float8"}, "dtype 'float8' is not supported"),
        ({"preset": "llama-3-8b", "max_model_len": 0}, "max_model_len must be at least 1"),
        (
            {"num_layers": 32, "num_attention_heads": 32, "hidden_size": 4096, "max_model_len": 8},
            "model.parameters is required",
        ),
        (
            {"parameters": 1e9, "num_attention_heads": 32, "hidden_size": 4096},
            "model.num_layers is required",
        ),
        (
            {
                "parameters": 1e9,
                "num_layers": 2,
                "num_attention_heads": 32,
                "num_kv_heads": 5,
                "hidden_size": 4096,
                "max_model_len": 8,
            },
            "num_kv_heads 5 must divide num_attention_heads 32",
        ),
        (
            {
                "parameters": 1e9,
                "num_layers": 2,
                "num_attention_heads": 4,
                "hidden_size": 64,
                "num_experts": 8,
                "max_model_len": 8,
            },
            "num_experts_per_token is required",
        ),
        (
            {
                "parameters": 1e3,
                "num_layers": 2,
                "num_attention_heads": 4,
                "hidden_size": 64,
                "vocab_size": 1000,
                "max_model_len": 8,
            },
            "leaves nothing for the layers",
        ),
        (
            {"parameters": 1e9, "num_layers": 2.5, "num_attention_heads": 4, "hidden_size": 64},
            "num_layers must be a whole number",
        ),
    ],
)
def test_bad_model_input_names_the_problem(options, message):
    with pytest.raises(InvalidInputError) as info:
        model_from_options(options, PRESETS)
    assert message in str(info.value)


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(InvalidInputError, match="no such file"):
        model_from_options({"config_path": str(tmp_path / "nope.json")}, PRESETS)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"cannot read .* as JSON"):
        model_from_options({"config_path": str(broken)}, PRESETS)
    listed = write_config(tmp_path, [1, 2], name="list.json")
    with pytest.raises(InvalidInputError, match="not a JSON object"):
        model_from_options({"config_path": str(listed)}, PRESETS)
    partial = write_config(tmp_path, {"hidden_size": 64}, name="partial.json")
    with pytest.raises(InvalidInputError, match=r"model\.num_layers is required"):
        model_from_options({"config_path": str(partial)}, PRESETS)


def test_unmodelled_quantization_in_a_config_is_refused_unless_overridden(tmp_path):
    config = {**LLAMA3_8B_CONFIG, "quantization_config": {"quant_method": "compressed-tensors"}}
    path = str(write_config(tmp_path, config))
    with pytest.raises(InvalidInputError, match=r"model\.quantization overrides a config\.json"):
        model_from_options({"config_path": path}, PRESETS)
    spec = model_from_options({"config_path": path, "quantization": "fp8"}, PRESETS)[0]
    assert spec.quantization == "fp8"
    assert spec.weight_bytes_per_param == 1
