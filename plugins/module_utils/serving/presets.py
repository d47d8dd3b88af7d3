# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Well-known models as presets for the layout planner.

``PRESETS`` maps a preset name to the facts of the model's published ``config.json``
(Hugging Face repository in ``hf_repo``), in the planner's field names:
layers, attention heads, KV heads, hidden size, vocabulary, intermediate (MLP/expert)
size, experts, tied embeddings, checkpoint dtype and ``max_position_embeddings``
(as ``max_model_len``). ``parameters`` is the total parameter count; the unit tests
check it against the count derived from the architecture
(``model.estimate_parameters``), so a wrong fact in this table fails a test.

Names: ``llama-3-8b``, ``llama-3-70b``, ``llama-3.1-405b``, ``mixtral-8x7b``,
``vicuna-13b`` (lmsys v1.3, the model of seed 002), ``mistral-7b``.

``GPU_MEMORY`` maps a GPU model to its memory as CUDA reports it, with the source of
the figure (see the comment above it).
"""

from __future__ import annotations

PRESETS = {
    "llama-3-8b": {
        "hf_repo": "meta-llama/Meta-Llama-3-8B",
        "parameters": 8.03e9,
        "num_layers": 32,
        "num_attention_heads": 32,
        "num_kv_heads": 8,
        "hidden_size": 4096,
        "vocab_size": 128256,
        "intermediate_size": 14336,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
        "max_model_len": 8192,
    },
    "llama-3-70b": {
        "hf_repo": "meta-llama/Meta-Llama-3-70B",
        "parameters": 70.55e9,
        "num_layers": 80,
        "num_attention_heads": 64,
        "num_kv_heads": 8,
        "hidden_size": 8192,
        "vocab_size": 128256,
        "intermediate_size": 28672,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
        "max_model_len": 8192,
    },
    "llama-3.1-405b": {
        "hf_repo": "meta-llama/Llama-3.1-405B",
        "parameters": 405.85e9,
        "num_layers": 126,
        "num_attention_heads": 128,
        "num_kv_heads": 8,
        "hidden_size": 16384,
        "vocab_size": 128256,
        "intermediate_size": 53248,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
        "max_model_len": 131072,
    },
    "mixtral-8x7b": {
        "hf_repo": "mistralai/Mixtral-8x7B-v0.1",
        "parameters": 46.70e9,
        "num_layers": 32,
        "num_attention_heads": 32,
        "num_kv_heads": 8,
        "hidden_size": 4096,
        "vocab_size": 32000,
        "intermediate_size": 14336,
        "num_experts": 8,
        "num_experts_per_token": 2,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
        "max_model_len": 32768,
    },
    "vicuna-13b": {
        "hf_repo": "lmsys/vicuna-13b-v1.3",
        "parameters": 13.02e9,
        "num_layers": 40,
        "num_attention_heads": 40,
        "num_kv_heads": 40,
        "hidden_size": 5120,
        "vocab_size": 32000,
        "intermediate_size": 13824,
        "tie_word_embeddings": False,
        "dtype": "float16",
        "max_model_len": 2048,
    },
    "mistral-7b": {
        "hf_repo": "mistralai/Mistral-7B-v0.1",
        "parameters": 7.24e9,
        "num_layers": 32,
        "num_attention_heads": 32,
        "num_kv_heads": 8,
        "hidden_size": 4096,
        "vocab_size": 32000,
        "intermediate_size": 14336,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
        "max_model_len": 32768,
    },
}

# GPU memory as CUDA reports it (``torch.cuda.mem_get_info()`` / ``cudaMemGetInfo``
# total, the same as deviceQuery's "Total amount of global memory"): what vLLM's
# gpu_memory_utilization is a fraction of. Users type the marketing figure ("80 GB");
# the driver keeps part of it. Only figures with a source are listed; any other GPU
# model is planned with the memory as given. ``match``: each set is the tokens of the
# model's name (``nvidia-smi`` / CUDA name, GPU Feature Discovery's
# ``nvidia.com/gpu.product``, or the PCI name vSphere shows) that identify it.
GPU_MEMORY = {
    "H100 80GB HBM3": {
        "match": [{"H100", "80GB", "HBM3"}, {"H100", "SXM5", "80GB"}],
        "cuda_bytes": 85_017_493_504,
        "source": "torch.cuda.mem_get_info() on an H100 80GB HBM3, driver 580.159.04, "
        "measured for issue 18",
    },
    "A100-SXM4-40GB": {
        "match": [{"A100", "SXM4", "40GB"}],
        "cuda_bytes": 42_298_834_944,
        "source": "CUDA deviceQuery on an A100-SXM4-40GB, CUDA 12.2 driver "
        "(bottlerocket-os/bottlerocket pull request 3873 on GitHub)",
    },
}
