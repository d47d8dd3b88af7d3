"""gpu-stack-launch serve: one replica in one pod, vLLM's multiprocessing executor, no Ray;
the same checks (options, key file, model marker) as the Ray head, before anything runs."""

import importlib.util
import json
import subprocess
import sys

import pytest
from gpu_stack_runtime.launcher import MARKER_NAME, cli
from gpu_stack_runtime.launcher.errors import LaunchError
from gpu_stack_runtime.launcher.supervise import Supervisor
from gpu_stack_runtime.launcher.vllm_args import ServeConfig, vllm_args

BASE_ENV = {"POD_IP": "127.0.0.9", "PATH": "/usr/bin"}


@pytest.fixture
def model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\0")
    (tmp_path / MARKER_NAME).write_text('{"staged": true}')
    return tmp_path


@pytest.fixture
def no_spawn(monkeypatch):
    def spawn(*_a, **_k):
        raise AssertionError("the launcher started a process")
    monkeypatch.setattr(Supervisor, "spawn", spawn)


def test_serve_runs_vllm_on_the_mp_executor_without_ray(capsys, model, tmp_path, no_spawn):
    (tmp_path / "api-key").write_text("s3cret\n")
    argv = ["serve", "--model-dir", str(model), "--served-model-name", "m",
            "--tensor-parallel-size", "2", "--api-key-file", str(tmp_path / "api-key"),
            "--dry-run", "--", "--dtype", "float16"]
    assert cli.main(argv, BASE_ENV) == 0
    plan = json.loads(capsys.readouterr().out)
    vllm = plan["vllm"]
    assert vllm[vllm.index("--distributed-executor-backend") + 1] == "mp"
    assert vllm[vllm.index("--tensor-parallel-size") + 1] == "2"
    assert "ray_start" not in plan and "gpu_wait" not in plan
    assert plan["gpus_needed"] == 2 and plan["model_marker"] == {"staged": True}
    assert plan["env"]["VLLM_API_KEY"] == "<redacted>" and "s3cret" not in json.dumps(plan)
    assert plan["env"]["VLLM_HOST_IP"] == "127.0.0.9"
    assert "--middleware" in vllm and vllm[-2:] == ["--dtype", "float16"]


@pytest.mark.parametrize(("argv", "code", "fragment"), [
    (["serve", "--served-model-name", "m"], 2, "--model-dir"),
    (["serve", "--model-dir", "{bare}", "--served-model-name", "m"], 3, MARKER_NAME),
    (["serve", "--model-dir", "{model}", "--served-model-name", "m", "--api-key-file",
      "/nonexistent/key"], 2, "cannot read the API key file"),
    (["serve", "--model-dir", "{model}", "--served-model-name", "m", "--",
      "--distributed-executor-backend", "ray"], 2, "repeat options the launcher sets"),
])
def test_serve_refuses_before_anything_starts(capsys, model, tmp_path_factory, no_spawn,
                                              argv, code, fragment):
    bare = tmp_path_factory.mktemp("bare")
    argv = [a.format(model=model, bare=bare) for a in argv]
    assert cli.main(argv, BASE_ENV) == code
    assert fragment in capsys.readouterr().err


def test_serve_supervises_vllm_and_returns_its_exit_code(model, tmp_path, monkeypatch):
    """A stand-in vLLM writes what it received and exits 7: the launcher passes the key
    in the environment only and returns vLLM's own exit code."""
    (tmp_path / "api-key").write_text("k-123\n")
    seen = tmp_path / "seen.json"
    script = ("import json, os, sys; json.dump({'argv': sys.argv[1:], 'key': "
              "os.environ.get('VLLM_API_KEY')}, open(sys.argv[1], 'w')); sys.exit(7)")
    monkeypatch.setattr(cli, "vllm_command", lambda config: [
        sys.executable, "-c", script, str(seen), *vllm_args(config)])
    argv = ["serve", "--model-dir", str(model), "--served-model-name", "m",
            "--api-key-file", str(tmp_path / "api-key"), "--stop-grace", "2"]
    assert cli.main(argv, BASE_ENV) == 7
    got = json.loads(seen.read_text())
    assert got["key"] == "k-123" and "k-123" not in got["argv"]
    assert got["argv"][got["argv"].index("--distributed-executor-backend") + 1] == "mp"


def test_an_unknown_executor_is_refused():
    with pytest.raises(LaunchError, match="executor must be one of ray, mp"):
        ServeConfig(model_dir="/m", served_model_name="m", executor="uni").validate()


def test_vllm_own_parser_accepts_the_mp_command_line():
    """In a process of its own: vLLM's import (torch) refuses the sys.intern patch that an
    earlier test's ansible import leaves in this one."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed in this venv")
    code = (
        "from gpu_stack_runtime.launcher.vllm_args import ServeConfig, check_vllm_args, vllm_args\n"
        "c = ServeConfig(model_dir='/models/m', served_model_name='m', tensor_parallel_size=2,"
        " executor='mp').validate()\n"
        "ns = check_vllm_args(vllm_args(c))\n"
        "print(ns.distributed_executor_backend, ns.tensor_parallel_size)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["mp", "2"]
