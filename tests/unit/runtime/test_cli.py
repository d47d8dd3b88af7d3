"""gpu-stack-launch's options, environment contract and refusals (nothing is started)."""

import json

import pytest
from gpu_stack_runtime.launcher import MARKER_NAME, cli
from gpu_stack_runtime.launcher.supervise import Supervisor


@pytest.fixture
def model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\0")
    (tmp_path / MARKER_NAME).write_text('{"staged": true}')
    return tmp_path


@pytest.fixture
def no_spawn(monkeypatch):
    """Any attempt to start a process fails the test."""
    def spawn(*_a, **_k):
        raise AssertionError("the launcher started a process")
    monkeypatch.setattr(Supervisor, "spawn", spawn)


BASE_ENV = {"POD_IP": "127.0.0.9", "PATH": "/usr/bin"}


def _plan(capsys, argv, env):
    assert cli.main(argv, env) == 0
    return json.loads(capsys.readouterr().out)


def test_environment_drives_the_plan(capsys, model, no_spawn, tmp_path_factory):
    key = tmp_path_factory.mktemp("secret") / "api-key"
    key.write_text("s3cret-value\n")
    env = {**BASE_ENV, "GPU_STACK_MODEL_DIR": str(model), "GPU_STACK_SERVED_MODEL_NAME": "m",
           "GPU_STACK_TENSOR_PARALLEL_SIZE": "2", "GPU_STACK_PIPELINE_PARALLEL_SIZE": "3",
           "GPU_STACK_API_KEY_FILE": str(key), "RAY_PORT": "6390",
           "GPU_STACK_VLLM_EXTRA_ARGS": "--dtype 'bfloat16'"}
    plan = _plan(capsys, ["head", "--dry-run", "--", "--enforce-eager"], env)
    assert plan["gpus_needed"] == 6 and plan["model_marker"] == {"staged": True}
    assert plan["vllm"][-3:] == ["--dtype", "bfloat16", "--enforce-eager"]
    assert "--node-ip-address=127.0.0.9" in plan["ray_start"]
    assert "--port=6390" in plan["ray_start"]
    assert plan["gpu_wait"][plan["gpu_wait"].index("--address") + 1] == "127.0.0.9:6390"
    assert plan["env"]["VLLM_API_KEY"] == "<redacted>"
    assert plan["env"]["NCCL_SOCKET_IFNAME"] == "lo"
    assert "s3cret" not in json.dumps(plan)
    assert plan["vllm"][plan["vllm"].index("--middleware") + 1].endswith(".RequireApiKey")


def test_metrics_key_reaches_vllm_env_only_and_no_key_means_no_middleware(
        capsys, model, no_spawn, tmp_path):
    (tmp_path / "metrics-key").write_text("scrape-key\n")
    argv = ["head", "--model-dir", str(model), "--served-model-name", "m", "--dry-run"]
    plan = _plan(capsys, [*argv, "--metrics-key-file", str(tmp_path / "metrics-key")],
                 {**BASE_ENV, "VLLM_API_KEY": "from-env"})
    assert plan["env"]["GPU_STACK_METRICS_KEY"] == "<redacted>"
    assert "scrape-key" not in json.dumps(plan) and "--middleware" in plan["vllm"]
    plan = _plan(capsys, argv, BASE_ENV)
    assert "--middleware" not in plan["vllm"] and "VLLM_API_KEY" not in plan["env"]


def test_arguments_win_over_the_environment(capsys, model, no_spawn):
    env = {**BASE_ENV, "GPU_STACK_TENSOR_PARALLEL_SIZE": "8", "RAY_ADDRESS": "10.1.1.1:6379"}
    plan = _plan(capsys, ["head", "--model-dir", str(model), "--served-model-name", "m",
                          "--tensor-parallel-size", "4", "--no-ray-start", "--dry-run"], env)
    assert plan["gpus_needed"] == 4 and plan["ray_start"] is None
    assert plan["gpu_wait"][plan["gpu_wait"].index("--address") + 1] == "10.1.1.1:6379"
    vllm = plan["vllm"]
    assert vllm[vllm.index("--tensor-parallel-size") + 1] == "4"
    assert vllm[vllm.index("--distributed-executor-backend") + 1] == "ray"


def test_worker_plan_joins_the_head(capsys, no_spawn):
    plan = _plan(capsys, ["worker", "--num-gpus", "2", "--dry-run"],
                 {**BASE_ENV, "RAY_ADDRESS": "head-svc:6379"})
    assert plan["ray_start"][1:] == ["start", "--block", "--address=head-svc:6379",
                                     "--num-gpus=2", "--node-ip-address=127.0.0.9"]


@pytest.mark.parametrize(("argv", "env", "code", "fragment"), [
    (["head", "--served-model-name", "m"], {}, 2, "--model-dir"),
    (["head", "--model-dir", "{model}", "--served-model-name", "m"],
     {"GPU_STACK_PORT": "eighty"}, 2, "GPU_STACK_PORT='eighty'"),
    (["head", "--model-dir", "{model}", "--served-model-name", "m", "--api-key-file",
      "/nonexistent/key"], {}, 2, "cannot read the API key file"),
    (["head", "--model-dir", "{bare}", "--served-model-name", "m"], {}, 3, MARKER_NAME),
])
def test_refusals_come_before_anything_starts(capsys, model, tmp_path_factory, no_spawn,
                                              argv, env, code, fragment):
    bare = tmp_path_factory.mktemp("bare")
    argv = [a.format(model=model, bare=bare) for a in argv]
    assert cli.main(argv, {**BASE_ENV, **env}) == code
    assert fragment in capsys.readouterr().err


def test_empty_api_key_file_is_refused(capsys, model, tmp_path, no_spawn):
    (tmp_path / "key").write_text("\n")
    argv = ["head", "--model-dir", str(model), "--served-model-name", "m",
            "--api-key-file", str(tmp_path / "key")]
    assert cli.main(argv, BASE_ENV) == 2
    assert "is empty" in capsys.readouterr().err


def test_child_env_keeps_explicit_values_and_adds_the_venv_bin():
    environ = {"POD_IP": "127.0.0.9", "GLOO_SOCKET_IFNAME": "eth1", "PATH": "/usr/bin",
               "HF_HUB_OFFLINE": "0", "VLLM_API_KEY": "inherited"}
    env = cli.child_env(environ, {"VLLM_API_KEY": "k"})
    assert env["GLOO_SOCKET_IFNAME"] == "eth1" and env["NCCL_SOCKET_IFNAME"] == "lo"
    assert env["VLLM_API_KEY"] == "k" and env["HF_HUB_OFFLINE"] == "0"
    assert env["PATH"].endswith("/usr/bin") and env["PATH"] != "/usr/bin"
    # Ray's environment: no key, not even one inherited from the pod's
    ray_env = cli.child_env({**environ, "GPU_STACK_METRICS_KEY": "m"})
    assert "VLLM_API_KEY" not in ray_env and "GPU_STACK_METRICS_KEY" not in ray_env


def test_healthcheck_fails_when_nothing_listens(capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        assert cli.main(["healthcheck", "--port", str(port), "--timeout", "1"], {}) == 1
    assert f"127.0.0.1:{port}/health" in capsys.readouterr().err


def test_healthcheck_passes_when_health_answers_200():
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *_args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert cli.main(["healthcheck", "--port", str(server.server_port)], {}) == 0
    finally:
        server.shutdown()
        server.server_close()
