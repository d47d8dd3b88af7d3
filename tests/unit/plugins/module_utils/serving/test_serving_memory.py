"""Tests for the per-GPU memory model (serving/memory.py), against hand arithmetic."""

from __future__ import annotations

import json

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.memory import (
    DEFAULT_BATCHED_TOKENS,
    kv_bytes_per_token,
    kv_heads_per_gpu,
    replica_memory,
    stage_layers,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.model import (
    model_from_options,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.presets import PRESETS

GIB = 2**30


def spec(name, **overrides):
    return model_from_options({"preset": name, **overrides}, PRESETS)[0]


@pytest.mark.parametrize(
    "layers, pp, expected",
    [
        (32, 1, [32]),
        (32, 4, [8, 8, 8, 8]),
        (32, 5, [6, 6, 7, 7, 6]),  # vLLM: remainder on the stages before the last
        (80, 3, [27, 27, 26]),
        (7, 7, [1] * 7),
        (10, 4, [2, 3, 3, 2]),
        (9, 4, [2, 2, 3, 2]),
    ],
)
def test_stage_layers_split_like_vllm(layers, pp, expected):
    counts = stage_layers(layers, pp)
    assert counts == expected
    assert sum(counts) == layers


def test_kv_heads_are_split_by_tp_or_replicated():
    assert kv_heads_per_gpu(8, 2) == 4
    assert kv_heads_per_gpu(8, 8) == 1
    assert kv_heads_per_gpu(8, 16) == 1


def test_kv_bytes_per_token_formula():
    llama8b = spec("llama-3-8b")
    # 2 (K,V) x 32 layers x 8 KV heads x 128 head_dim x 2 bytes
    assert kv_bytes_per_token(llama8b, 1, 32, 2) == 2 * 32 * 8 * 128 * 2 == 131072
    assert kv_bytes_per_token(llama8b, 2, 16, 1) == 2 * 16 * 4 * 128 * 1
    vicuna = spec("vicuna-13b")
    assert kv_bytes_per_token(vicuna, 1, 40, 2) == 819200


def test_single_gpu_llama_3_8b_by_hand():
    (stage,) = replica_memory(
        spec("llama-3-8b"), 1, 1, gpu_memory_gib=40, utilization=0.9, kv_bytes=2
    )
    weights = 8.03e9 * 2  # every parameter in bf16 on one GPU
    activations = 2048 * (4 * 4096 + 2 * 14336) * 2
    logits = 256 * 128256 * 4
    overhead = 1.0 * GIB + activations + logits
    kv = 0.9 * 40 * GIB - weights - overhead
    assert stage.weights_gib == pytest.approx(weights / GIB)
    assert stage.overhead_gib == pytest.approx(overhead / GIB)
    assert stage.kv_cache_gib == pytest.approx(kv / GIB)
    assert stage.kv_capacity_tokens == int(kv // 131072) // 16 * 16
    assert stage.kv_capacity_tokens % 16 == 0
    assert stage.fits_weights


def test_tp_and_pp_split_weights_and_place_embeddings_on_the_end_stages():
    model = spec("llama-3-70b")
    stages = replica_memory(model, 2, 2, gpu_memory_gib=40, utilization=0.9, kv_bytes=2)
    assert [s.layers for s in stages] == [40, 40]
    embed = 128256 * 8192 * 2 / 2  # bf16, split by TP 2
    layer = (70.55e9 - 2 * 128256 * 8192) / 80 * 2 / 2
    assert stages[0].weights_gib == pytest.approx((40 * layer + embed) / GIB)
    assert stages[1].weights_gib == pytest.approx((40 * layer + embed) / GIB)
    # both stages together hold the whole model once
    total = sum(s.weights_gib for s in stages) * 2
    assert total == pytest.approx(70.55e9 * 2 / GIB)
    # NCCL buffers counted when the replica has more than one GPU
    assert stages[0].overhead_gib > 1.5


def test_quantization_shrinks_layers_not_embeddings():
    dense = replica_memory(spec("llama-3-8b"), 1, 1, 24, 0.9, 2)[0]
    awq = replica_memory(spec("llama-3-8b", quantization="awq"), 1, 1, 24, 0.9, 2)[0]
    embeddings = 2 * 128256 * 4096 * 2 / GIB
    layers_dense = dense.weights_gib - embeddings
    assert awq.weights_gib - embeddings == pytest.approx(layers_dense * 0.52 / 2)


def test_fp8_kv_cache_doubles_the_tokens():
    bf16 = replica_memory(spec("llama-3-8b"), 1, 1, 40, 0.9, 2)[0]
    fp8 = replica_memory(spec("llama-3-8b"), 1, 1, 40, 0.9, 1)[0]
    assert fp8.kv_bytes_per_token * 2 == bf16.kv_bytes_per_token
    assert abs(fp8.kv_capacity_tokens - 2 * bf16.kv_capacity_tokens) <= 32


def test_overflow_gives_zero_tokens_and_negative_kv():
    (stage,) = replica_memory(spec("llama-3-70b"), 1, 1, 40, 0.9, 2)
    assert not stage.fits_weights
    assert stage.kv_cache_gib < 0
    assert stage.kv_capacity_tokens == 0


def test_overhead_override_and_as_dict_rounding():
    (stage,) = replica_memory(spec("llama-3-8b"), 1, 1, 40, 0.9, 2, overhead_gib=3.0)
    assert stage.overhead_gib > 3.0
    data = stage.as_dict()
    assert data["weights_gib"] == round(stage.weights_gib, 2)
    assert set(data) == {
        "stage",
        "layers",
        "budget_gib",
        "weights_gib",
        "overhead_gib",
        "kv_cache_gib",
        "kv_bytes_per_token",
        "kv_capacity_tokens",
    }


# --- measured on a GPU ---------------------------------------------------------------
# vLLM 0.24.0 on one H100 80GB HBM3 (tests/gpu/results/h100-2026-12-06.json, produced by
# tests/gpu): what vLLM logged ("Model loading took X GiB", "GPU KV cache size: N tokens")
# for each run, through the launcher (Ray executor) and plain (vLLM's single-GPU
# executor). The planner is fed the memory CUDA reports (torch.cuda.mem_get_info total:
# 85017493504 bytes = 79.18 GiB), not the "80 GB" on the box.
H100_CUDA_GIB = 85017493504 / GIB
GPU_CONFIGS = {  # the config.json files tests/gpu/prepare.py serves (public architectures)
    "llama-3-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                   "max_position_embeddings": 8192, "torch_dtype": "bfloat16"},
    "llama-2-13b": {"hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
                    "num_attention_heads": 40, "num_key_value_heads": 40, "vocab_size": 32000,
                    "max_position_embeddings": 4096, "torch_dtype": "float16"},
    "tiny": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 32,
             "vocab_size": 1391, "max_position_embeddings": 2048, "dtype": "bfloat16"},
}
# (model, executor, max_model_len, gpu_memory_utilization, weights GiB, KV-cache tokens)
H100_RUNS = [
    ("llama-3-8b", "ray", 8192, 0.90, 14.96, 450336),
    ("llama-3-8b", "uni", 8192, 0.90, 14.96, 450336),
    ("llama-3-8b", "ray", 4096, 0.80, 14.96, 385472),
    ("llama-2-13b", "ray", 4096, 0.90, 24.29, 60032),
    ("llama-2-13b", "uni", 4096, 0.90, 24.29, 60032),
    ("llama-2-13b", "ray", 2048, 0.80, 24.29, 49648),
    ("tiny", "ray", 2048, 0.50, 0.0013, 41172448),  # 1.3 MB of weights (vLLM prints 0.0)
]


def _gpu_model(name, max_model_len, tmp_path):
    path = tmp_path / f"{name}.json"
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "tie_word_embeddings": False, **GPU_CONFIGS[name]}
    path.write_text(json.dumps(config))
    return model_from_options({"config_path": str(path), "max_model_len": max_model_len},
                              PRESETS)[0]


@pytest.mark.parametrize("batched_tokens", [DEFAULT_BATCHED_TOKENS, 8192],
                         ids=["planner-default", "vllm-0.24-h100-default"])
@pytest.mark.parametrize("name, executor, length, util, weights_gib, kv_tokens", H100_RUNS,
                         ids=[f"{r[0]}-{r[1]}-{r[2]}-{r[3]}" for r in H100_RUNS])
def test_prediction_within_2_percent_of_vllm_on_h100(tmp_path, name, executor, length, util,
                                                     weights_gib, kv_tokens, batched_tokens):
    model = _gpu_model(name, length, tmp_path)
    (stage,) = replica_memory(model, 1, 1, gpu_memory_gib=H100_CUDA_GIB, utilization=util,
                              kv_bytes=model.dense_bytes_per_param,
                              batched_tokens=batched_tokens)
    assert stage.weights_gib == pytest.approx(weights_gib, rel=0.02, abs=0.005)
    assert stage.kv_capacity_tokens == pytest.approx(kv_tokens, rel=0.02)


def test_typed_80_gb_overestimates_the_h100_kv_cache(tmp_path):
    # the same run planned with the "80" users type: 0.74 GiB of KV cache that is not there
    model = _gpu_model("llama-3-8b", 8192, tmp_path)
    typed, usable = (replica_memory(model, 1, 1, gpu_memory_gib=gib, utilization=0.9,
                                    kv_bytes=2)[0].kv_capacity_tokens
                     for gib in (80, H100_CUDA_GIB))
    measured = 450336
    assert typed > measured * 1.01
    assert abs(typed - measured) > 10 * abs(usable - measured)
