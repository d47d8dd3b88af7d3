"""The launcher against a real local Ray cluster (acceptance of issue 7, launcher part)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest
from gpu_stack_runtime.launcher import MARKER_NAME
from serving_procs import Launcher, RayNodeDir, base_env, free_ports, port_open, run_python

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _ray_gpus(address: str) -> dict:
    """Ask the Ray cluster itself (a separate driver), not the launcher's log."""
    code = textwrap.dedent(f"""
        import json, ray
        ray.init(address={address!r}, logging_level="ERROR", log_to_driver=False)
        nodes = sorted((n["NodeManagerAddress"], n["Resources"].get("GPU", 0))
                       for n in ray.nodes() if n["Alive"])
        print(json.dumps({{"gpus": ray.cluster_resources().get("GPU"), "nodes": nodes}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], env=base_env(), check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_waits_while_gpus_are_missing_then_proceeds_when_a_worker_joins(served_model):
    lines = served_model.head.launcher_lines()
    partial = [i for i, ln in enumerate(lines) if "1 of 2 GPUs joined" in ln]
    joined = [i for i, ln in enumerate(lines)
              if ln.endswith("2 of 2 GPUs joined (nodes: 127.0.0.2=1, 127.0.0.3=1)")]
    vllm = [i for i, ln in enumerate(lines) if "starting vLLM" in ln]
    assert partial and joined and vllm, "\n".join(lines)
    assert partial[-1] < joined[0] < vllm[0]
    assert served_model.partial_line.endswith("1 of 2 GPUs joined (nodes: 127.0.0.2=1)")
    cluster = _ray_gpus(served_model.ray_address)
    assert cluster == {"gpus": 2.0, "nodes": [["127.0.0.2", 1.0], ["127.0.0.3", 1.0]]}


def test_timeout_fails_with_the_missing_count(served_model, tmp_path):
    """A plan for 3 GPUs on the 2-GPU cluster: the wait reports 2 of 3 and gives up."""
    launcher = Launcher("short", [
        "head", "--model-dir", served_model.model_dir,
        "--served-model-name", "tiny", "--tensor-parallel-size", "3", "--no-ray-start",
        "--ray-address", served_model.ray_address, "--gpu-timeout", "6",
        "--progress-interval", "1",
    ], base_env(POD_IP="127.0.0.2"), tmp_path)
    assert launcher.wait(120) == 4
    lines = launcher.launcher_lines()
    progress = [ln for ln in lines if ln.endswith(
        "2 of 3 GPUs joined (nodes: 127.0.0.2=1, 127.0.0.3=1)")]
    assert len(progress) >= 2, "\n".join(lines)
    assert any(ln.endswith("timed out after 6 s waiting for GPUs: 2 of 3 GPUs joined "
                           "(nodes: 127.0.0.2=1, 127.0.0.3=1); 1 missing") for ln in lines)
    assert "starting vLLM" not in launcher.text()


def test_refuses_a_model_directory_without_the_marker(tiny_model_dir, tmp_path):
    assert not (tiny_model_dir / MARKER_NAME).exists()
    (gcs_port,) = free_ports(1)
    node_dir = RayNodeDir(head=True)
    launcher = Launcher("unstaged", [
        "head", "--model-dir", str(tiny_model_dir), "--served-model-name", "tiny",
        "--ray-port", str(gcs_port), *node_dir.ray_args(),
    ], base_env(POD_IP="127.0.0.4"), tmp_path, node_dir)
    try:
        assert launcher.wait(60) == 3
    finally:
        launcher.stop()
    assert re.search(rf"no completion marker {re.escape(MARKER_NAME)}", launcher.text())
    assert "started ray" not in launcher.text()
    assert not port_open("127.0.0.4", gcs_port)


_PARSER_PROBE = """
    import contextlib, io, json
    from gpu_stack_runtime.launcher import LaunchError, cli
    from gpu_stack_runtime.launcher.vllm_args import ServeConfig, check_vllm_args, vllm_command

    out = {}
    plan = ServeConfig("/models/llama-3-70b", "llama-3-70b", tensor_parallel_size=2,
                       pipeline_parallel_size=8, max_model_len=8192,
                       gpu_memory_utilization=0.92).validate()
    ns = check_vllm_args(vllm_command(plan))
    out["production"] = {k: getattr(ns, k) for k in (
        "tensor_parallel_size", "pipeline_parallel_size", "distributed_executor_backend",
        "served_model_name", "max_model_len", "gpu_memory_utilization")}
    for name, argv in {
        "misspelt": ["--model", "/m", "--tensor-paralel-size", "2"],
        "bad_type": ["--model", "/m", "--pipeline-parallel-size", "two"],
        "bad_executor": ["--model", "/m", "--distributed-executor-backend", "rayy"],
    }.items():
        try:
            check_vllm_args(argv)
            out[name] = "accepted"
        except LaunchError as exc:
            out[name] = str(exc)
    env = {"GPU_STACK_MODEL_DIR": "/models/m", "GPU_STACK_SERVED_MODEL_NAME": "m",
           "GPU_STACK_TENSOR_PARALLEL_SIZE": "2", "GPU_STACK_PIPELINE_PARALLEL_SIZE": "8"}
    for name, argv in {"cli_ok": ["check-args"],
                       "cli_bad": ["check-args", "--", "--no-such-vllm-option"]}.items():
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = cli.main(argv, env)
        out[name] = {"code": code, "out": stdout.getvalue(), "err": stderr.getvalue()}
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def parser_probe():
    """vLLM's own parser run once, in a child process, on every case below."""
    return run_python(_PARSER_PROBE)


def test_check_vllm_args_accepts_the_production_layout(parser_probe):
    assert parser_probe["production"] == {
        "tensor_parallel_size": 2, "pipeline_parallel_size": 8,
        "distributed_executor_backend": "ray", "served_model_name": ["llama-3-70b"],
        "max_model_len": 8192, "gpu_memory_utilization": 0.92}


@pytest.mark.parametrize(("case", "fragment"), [
    ("misspelt", "unrecognized arguments: --tensor-paralel-size"),
    ("bad_type", "invalid int value"),
    ("bad_executor", "'rayy' is not one of"),
])
def test_check_vllm_args_rejects_what_vllm_rejects(parser_probe, case, fragment):
    assert parser_probe[case].startswith("vLLM rejects the command line")
    assert fragment in parser_probe[case]


def test_check_args_command_validates_the_production_line(parser_probe):
    ok, bad = parser_probe["cli_ok"], parser_probe["cli_bad"]
    assert ok["code"] == 0
    assert ("tensor_parallel_size=2 pipeline_parallel_size=8 "
            "distributed_executor_backend=ray") in ok["out"]
    assert bad["code"] == 2
    assert "unrecognized arguments: --no-such-vllm-option" in bad["err"]
