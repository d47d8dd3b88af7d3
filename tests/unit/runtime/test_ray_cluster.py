"""ray_start_command (KubeRay's generated command or our own) and the GPU wait loop."""

import shlex

import pytest
from gpu_stack_runtime.launcher import LaunchError
from gpu_stack_runtime.launcher.errors import EXIT_GPUS
from gpu_stack_runtime.launcher.ray_cluster import (
    KUBERAY_CMD_ENV,
    GpuSnapshot,
    ray_start_command,
    wait_for_gpus,
)

# As KubeRay's pod.go renders it: sorted flags, --block always, quoted resources JSON.
KUBERAY_HEAD = ("ray start --head  --block  --dashboard-agent-listen-port=52365  "
                "--dashboard-host=0.0.0.0  --metrics-export-port=8080  --num-gpus=0  "
                "--resources='{\"accel\":1}' ")
KUBERAY_WORKER = ("ray start  --address=demo-head-svc.ns.svc.cluster.local:6379  --block  "
                  "--num-gpus=2 ")


def test_kuberay_command_runs_through_the_shell_with_node_ip_added():
    argv = ray_start_command("head", {KUBERAY_CMD_ENV: KUBERAY_HEAD}, node_ip="10.0.0.7")
    assert argv[:2] == ["/bin/sh", "-c"]
    words = shlex.split(argv[2])
    assert words[:4] == ["exec", "ray", "start", "--head"]
    assert "--resources={\"accel\":1}" in words  # the shell's quoting survives
    assert words[-1] == "--node-ip-address=10.0.0.7"
    assert words.count("--block") == 1


def test_kuberay_command_gets_block_when_missing_and_keeps_its_node_ip():
    cmd = "ray start --address=h:6379 --node-ip-address=10.0.0.9"
    words = shlex.split(ray_start_command("worker", {KUBERAY_CMD_ENV: cmd},
                                          node_ip="10.0.0.7")[2])
    assert "--block" in words and "--node-ip-address=10.0.0.7" not in words


@pytest.mark.parametrize(("role", "cmd", "fragment"), [
    ("worker", KUBERAY_HEAD, "does not start a worker"),
    ("head", KUBERAY_WORKER, "does not start a head"),
    ("head", "echo hi", "not a 'ray start'"),
])
def test_kuberay_command_for_the_wrong_role_is_refused(role, cmd, fragment):
    with pytest.raises(LaunchError, match=fragment):
        ray_start_command(role, {KUBERAY_CMD_ENV: cmd})


def test_own_head_and_worker_commands():
    head = ray_start_command("head", {}, port=6400, num_gpus=0, node_ip="127.0.0.2",
                             extra=["--temp-dir=/x"])
    assert head[1:] == ["start", "--block", "--head", "--port=6400", "--num-gpus=0",
                        "--node-ip-address=127.0.0.2", "--temp-dir=/x"]
    worker = ray_start_command("worker", {}, address="127.0.0.2:6400", num_gpus=2)
    assert worker[1:] == ["start", "--block", "--address=127.0.0.2:6400", "--num-gpus=2"]


def test_worker_without_an_address_is_refused():
    with pytest.raises(LaunchError, match="head's address"):
        ray_start_command("worker", {})


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def _probe(states, clock):
    """Cluster states by time: [(from_second, snapshot or ConnectionError)]."""
    def probe():
        current = [s for t, s in states if t <= clock.now][-1]
        if isinstance(current, Exception):
            raise current
        return current
    return probe


HEAD_ONLY = GpuSnapshot((("10.0.0.1", 0.0),))
ONE = GpuSnapshot((("10.0.0.1", 0.0), ("10.0.0.2", 2.0)))
TWO = GpuSnapshot((("10.0.0.1", 0.0), ("10.0.0.2", 2.0), ("10.0.0.3", 2.0)))


def test_waits_logging_progress_then_returns_when_the_gpus_joined():
    clock, lines = _Clock(), []
    states = [(0, ConnectionError("GCS not up")), (3, HEAD_ONLY), (12, ONE), (21, TWO)]
    got = wait_for_gpus(_probe(states, clock), 4, timeout=60, interval=5, log=lines.append,
                        clock=clock, sleep=clock.sleep)
    assert got == TWO
    assert lines[0] == "0 of 4 GPUs joined (GCS not up)"
    assert "2 of 4 GPUs joined (nodes: 10.0.0.1=0, 10.0.0.2=2)" in lines
    assert lines[-1] == "4 of 4 GPUs joined (nodes: 10.0.0.1=0, 10.0.0.2=2, 10.0.0.3=2)"
    assert 4 <= len(lines) <= 6  # every 5 s over 21 s, not every poll


def test_timeout_names_how_many_joined_and_how_many_are_missing():
    clock, lines = _Clock(), []
    with pytest.raises(LaunchError) as err:
        wait_for_gpus(_probe([(0, ONE)], clock), 16, timeout=30, interval=5,
                      log=lines.append, clock=clock, sleep=clock.sleep)
    assert err.value.exit_code == EXIT_GPUS
    assert str(err.value) == ("timed out after 30 s waiting for GPUs: 2 of 16 GPUs joined "
                              "(nodes: 10.0.0.1=0, 10.0.0.2=2); 14 missing")
    assert lines[-1] == "2 of 16 GPUs joined (nodes: 10.0.0.1=0, 10.0.0.2=2)"


def test_stop_request_ends_the_wait():
    clock = _Clock()
    with pytest.raises(LaunchError, match="stopped while waiting for GPUs: 0 of 2"):
        wait_for_gpus(_probe([(0, HEAD_ONLY)], clock), 2, timeout=60, log=lambda _: None,
                      should_stop=lambda: clock.now > 3, clock=clock, sleep=clock.sleep)


def test_a_layout_needing_no_gpu_is_refused():
    with pytest.raises(LaunchError, match="at least 1"):
        wait_for_gpus(lambda: TWO, 0, timeout=1)
