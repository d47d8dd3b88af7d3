"""The lab's tiny model generator: the second family (qwen2) differs from the Llama in
what vLLM loads differently, and the Llama's spec is the one it always had (so a model
generated before the families existed stays current)."""

from __future__ import annotations

import pytest
from gpu_lab import tiny_model


class _Tokenizer:
    bos_token_id, eos_token_id, pad_token_id = 0, 1, 2

    def __len__(self):
        return 1391


def test_the_llama_spec_is_unchanged_and_qwen2_has_its_own():
    pytest.importorskip("torch")  # the spec names the versions of the libraries it uses
    llama, qwen = tiny_model.spec(), tiny_model.spec("qwen2")
    assert "family" not in llama and llama == tiny_model.spec("llama")
    assert llama["seed"] == tiny_model.SEED and llama["architecture"] == tiny_model.ARCHITECTURE
    assert qwen["family"] == "qwen2" and qwen["seed"] != llama["seed"]
    assert qwen["architecture"]["num_key_value_heads"] == 2
    with pytest.raises(ValueError, match="unknown family 'gpt2'"):
        tiny_model.spec("gpt2")


def test_qwen2_config_and_tensors():
    config = tiny_model._config(_Tokenizer(), "qwen2")
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["model_type"] == "qwen2"
    assert config["tie_word_embeddings"] is True and "head_dim" not in config
    assert config["rope_parameters"]["rope_theta"] == 1e6
    shapes = tiny_model._weight_shapes(config)
    assert "lm_head.weight" not in shapes  # tied: the embedding serves as the LM head
    assert shapes["model.layers.0.self_attn.q_proj.bias"] == (128,)
    assert shapes["model.layers.1.self_attn.k_proj.weight"] == (64, 128)  # 2 KV heads x 32
    assert shapes["model.embed_tokens.weight"] == (1391, 128)
    llama = tiny_model._weight_shapes(tiny_model._config(_Tokenizer()))
    assert "lm_head.weight" in llama and not any(name.endswith(".bias") for name in llama)
    assert len(shapes) == len(llama) - 1 + 3 * config["num_hidden_layers"]
