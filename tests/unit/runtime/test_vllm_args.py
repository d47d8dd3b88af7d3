"""The vLLM command line from a plan."""

import sys

import pytest
from gpu_stack_runtime.launcher import LaunchError
from gpu_stack_runtime.launcher.vllm_args import (
    VLLM_SERVER_MODULE,
    ServeConfig,
    vllm_args,
    vllm_command,
)

PLAN = ServeConfig("/models/llama", "llama-3-70b", tensor_parallel_size=2,
                   pipeline_parallel_size=8, max_model_len=8192, gpu_memory_utilization=0.92,
                   port=8000, extra_args=("--dtype", "bfloat16"))


def _opt(argv, flag):
    return argv[argv.index(flag) + 1]


def test_production_command_carries_the_plan():
    argv = vllm_command(PLAN.validate())
    assert argv[:3] == [sys.executable, "-m", VLLM_SERVER_MODULE]
    assert _opt(argv, "--tensor-parallel-size") == "2"
    assert _opt(argv, "--pipeline-parallel-size") == "8"
    assert _opt(argv, "--distributed-executor-backend") == "ray"
    assert _opt(argv, "--served-model-name") == "llama-3-70b"
    assert _opt(argv, "--max-model-len") == "8192"
    assert _opt(argv, "--gpu-memory-utilization") == "0.92"
    assert argv[-2:] == ["--dtype", "bfloat16"]
    assert PLAN.gpus_needed == 16


def test_args_are_the_command_after_the_server_module():
    assert vllm_command(PLAN)[3:] == vllm_args(PLAN)


def test_no_api_key_in_argv():
    assert not any("api-key" in a for a in vllm_command(PLAN))


def test_the_key_guards_every_path_through_the_middleware():
    import importlib

    argv = vllm_args(PLAN)
    path = _opt(argv, "--middleware")
    module, name = path.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name).__name__ == "RequireApiKey"
    # an open server (no key at all) gets no middleware that would refuse to start
    open_argv = vllm_args(ServeConfig(**{**PLAN.__dict__, "require_api_key": False}))
    assert "--middleware" not in open_argv


@pytest.mark.parametrize(("change", "fragment"), [
    ({"served_model_name": "llama 70b"}, "served model name"),
    ({"served_model_name": "-llama"}, "served model name"),
    ({"served_model_name": "x" * 129}, "served model name"),
    ({"tensor_parallel_size": 0}, "tensor_parallel_size must be >= 1"),
    ({"pipeline_parallel_size": -1}, "pipeline_parallel_size must be >= 1"),
    ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
    ({"port": 70000}, "port must be"),
    ({"max_model_len": 0}, "max_model_len"),
    ({"extra_args": ("--tensor-parallel-size=4",)}, "repeat options the launcher sets"),
    ({"extra_args": ("--api-key", "x")}, "repeat options the launcher sets"),
])
def test_bad_plans_are_refused_before_anything_runs(change, fragment):
    fields = {**PLAN.__dict__, **change}
    with pytest.raises(LaunchError, match=fragment):
        ServeConfig(**fields).validate()


def test_all_problems_are_reported_at_once():
    with pytest.raises(LaunchError) as err:
        ServeConfig("/m", "bad name", tensor_parallel_size=0, port=0).validate()
    assert str(err.value).count(";") == 2
