"""``gpu-lab up|status|down|reset`` as a user runs it: a daemon, state kept between runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client, config

pytestmark = [pytest.mark.lab, pytest.mark.slow]
LAB = Path(__file__).resolve().parents[2] / "lab"


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(LAB), "GPU_LAB_HOME": str(home)}
    env.pop("GPU_LAB_WORKERS", None)
    return subprocess.run([sys.executable, "-m", "gpu_lab.cli", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False)


def test_up_status_down_keeps_state_and_reset_forgets(tmp_path: Path) -> None:
    home = tmp_path / "lab"
    try:
        started = _cli(home, "up", "--no-vsphere", "--ocp-version", "4.17.9")
        assert started.returncode == 0, started.stderr
        assert "ready in" in started.stdout
        api = config.new_client_from_config(str(home / "kubeconfig"))
        core = client.CoreV1Api(api)
        core.create_namespaced_config_map("default", {"metadata": {"name": "kept"}})
        assert client.VersionApi(api).get_code().git_version == "v1.30.13"
        status = _cli(home, "status")
        assert status.returncode == 0
        assert "OpenShift 4.17.9" in status.stdout and "nodes get no GPUs" in status.stdout
        assert _cli(home, "down").returncode == 0
        assert _cli(home, "status").returncode == 1
        assert _cli(home, "up", "--no-vsphere").returncode == 0
        api = config.new_client_from_config(str(home / "kubeconfig"))
        assert client.CoreV1Api(api).read_namespaced_config_map("kept", "default").metadata.uid
        assert _cli(home, "reset").returncode == 0
        assert _cli(home, "up", "--no-vsphere").returncode == 0
        api = config.new_client_from_config(str(home / "kubeconfig"))
        with pytest.raises(client.ApiException) as err:
            client.CoreV1Api(api).read_namespaced_config_map("kept", "default")
        assert err.value.status == 404
    finally:
        _cli(home, "down")
    assert not (home / "k8s" / "apiserver.pid").exists()
