"""GPU memory as CUDA reports it, not as users type it (serving/inputs.py, issue 18 item 3).

The reference figures are typed here from their sources, independently of the table in
presets.py: an H100 80GB HBM3 reports 85,017,493,504 bytes total to
torch.cuda.mem_get_info() (measured on the device for issue 18); an A100-SXM4-40GB
reports 42,298,834,944 bytes in CUDA's deviceQuery (bottlerocket-os/bottlerocket#3873).
"""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan

H100_BYTES = 85_017_493_504
A100_SXM4_40GB_BYTES = 42_298_834_944
LLAMA_8B_KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2  # K and V x layers x KV heads x dim x bf16


def one_gpu(memory, model=None):
    hardware = {"nodes": 1, "gpus_per_node": 1, "gpu_memory_gib": memory}
    if model is not None:
        hardware["gpu_model"] = model
    return hardware


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA H100 80GB HBM3",  # nvidia-smi and torch.cuda.get_device_name()
        "NVIDIA-H100-80GB-HBM3",  # GPU Feature Discovery's nvidia.com/gpu.product
        "GH100 [H100 SXM5 80GB]",  # the PCI name vSphere shows
        "h100 80 GB hbm3",
    ],
)
def test_a_known_h100_is_planned_with_what_cuda_reports(name):
    plan = build_plan({"preset": "llama-3-8b"}, one_gpu(80, name))
    hardware = plan["hardware"]
    assert hardware["gpu_memory_gib"] == 80
    assert hardware["gpu_memory_gib_used"] == round(H100_BYTES / 2**30, 2) == 79.18
    assert hardware["gpu_memory_source"].startswith("known model H100 80GB HBM3: 79.18 GiB")
    assert str(H100_BYTES) in hardware["gpu_memory_source"]
    assert plan["memory"]["budget_gib"] == round(0.9 * H100_BYTES / 2**30, 2)
    assert "x 79.18 GiB, memory known model H100 80GB HBM3: 79.18 GiB" in plan["summary"][1]


def test_the_cuda_figure_costs_kv_cache_tokens_against_the_typed_80():
    typed = build_plan({"preset": "llama-3-8b"}, one_gpu(80))
    known = build_plan({"preset": "llama-3-8b"}, one_gpu(80, "NVIDIA H100 80GB HBM3"))
    assert typed["hardware"]["gpu_memory_gib_used"] == 80
    lost_bytes = 0.9 * (80 * 2**30 - H100_BYTES)
    lost_tokens = typed["kv_cache"]["capacity_tokens"] - known["kv_cache"]["capacity_tokens"]
    assert lost_tokens == pytest.approx(lost_bytes / LLAMA_8B_KV_BYTES_PER_TOKEN, abs=16)
    # a KV target the typed 80 GiB would accept is refused on the real card
    target = known["kv_cache"]["capacity_tokens"] + 1024
    assert target <= typed["kv_cache"]["capacity_tokens"]
    build_plan({"preset": "llama-3-8b"}, one_gpu(80), targets={"kv_cache_tokens": target})
    with pytest.raises(InvalidInputError) as info:
        build_plan(
            {"preset": "llama-3-8b"},
            one_gpu(80, "NVIDIA-H100-80GB-HBM3"),
            targets={"kv_cache_tokens": target},
        )
    assert "1 GPUs of 79.18 GiB" in str(info.value)
    assert "short by 1024 tokens" in str(info.value)


def test_a_lower_figure_given_wins_over_the_known_one():
    plan = build_plan({"preset": "llama-3-8b"}, one_gpu(70, "NVIDIA H100 80GB HBM3"))
    hardware = plan["hardware"]
    assert hardware["gpu_memory_gib_used"] == 70
    assert hardware["gpu_memory_source"] == (
        "as given (below the 79.18 GiB CUDA reports for H100 80GB HBM3)"
    )
    assert plan["memory"]["budget_gib"] == 63


def test_a100_sxm4_40gb_is_known():
    plan = build_plan({"preset": "llama-3-8b"}, one_gpu(40, "NVIDIA A100-SXM4-40GB"))
    assert plan["hardware"]["gpu_memory_gib_used"] == round(A100_SXM4_40GB_BYTES / 2**30, 2)
    assert plan["hardware"]["gpu_memory_source"].startswith("known model A100-SXM4-40GB")


@pytest.mark.parametrize(
    "name, why",
    [
        (None, "no hardware.gpu_model"),
        ("A10G", "no CUDA-reported figure known for 'A10G'"),
        # no sourced CUDA figure for these: the typed memory stays
        ("NVIDIA H100 PCIe", "no CUDA-reported figure known for 'NVIDIA H100 PCIe'"),
        ("NVIDIA-A100-80GB-PCIe", "no CUDA-reported figure known"),
        ("NVIDIA-A100-PCIE-40GB", "no CUDA-reported figure known"),
        ("NVIDIA-L40S", "no CUDA-reported figure known"),
        ("NVIDIA H200", "no CUDA-reported figure known"),
    ],
)
def test_other_gpus_are_planned_with_the_memory_as_given(name, why):
    plan = build_plan({"preset": "llama-3-8b"}, one_gpu(40, name))
    hardware = plan["hardware"]
    assert hardware["gpu_memory_gib"] == hardware["gpu_memory_gib_used"] == 40
    assert hardware["gpu_memory_source"].startswith("as given (")
    assert why in hardware["gpu_memory_source"]
    assert plan["memory"]["budget_gib"] == 36
    assert plan["summary"][1] == (
        f"hardware: 1 nodes x 1 GPUs x 40 GiB, memory {hardware['gpu_memory_source']}"
    )
