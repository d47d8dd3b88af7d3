"""Processes of the serving tests: gpu-stack-launch heads and workers on loopback Ray nodes.

Several Ray nodes share this machine on their own loopback addresses (127.0.0.2,
127.0.0.3, ...; Ray replaces 127.0.0.1 with the machine's address). Every port a node
opens is chosen free here, and every node gets its own short temp dir, so the tests
neither collide with each other nor with a Ray someone else runs on the machine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_lab.controllers.process_util import POD_SITE
from integration.lab.waiting import wait_for

REPO = Path(__file__).resolve().parents[3]
RUNTIME_SRC = REPO / "images" / "runtime"
LAB_SRC = REPO / "tests" / "lab"
# vLLM on CPU: eager, a small KV cache, and float16, not bfloat16: for bfloat16 on a
# CPU that reports AMX, vLLM 0.32's CPU attention picks its AMX kernel without asking
# the kernel for AMX state, and its worker dies of SIGILL on the first request
# (measured on these machines; float16 takes the AVX-512 kernel).
LAB_VLLM_EXTRA = ["--dtype", "float16", "--enforce-eager", "--kv-cache-memory-bytes", "64M"]


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _index in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def base_env(**extra: str) -> dict[str, str]:
    """The environment of a launcher: with the lab's pod site first on PYTHONPATH, as
    the lab's kubelet gives a process pod (vLLM's server then runs as CPU vLLM can)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(POD_SITE), str(RUNTIME_SRC), str(LAB_SRC), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop("RAY_ADDRESS", None)
    env.pop("VLLM_API_KEY", None)
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", **extra})
    return env


class RayNodeDir:
    """A short temp dir and free ports for one Ray node (AF_UNIX paths must stay short)."""

    def __init__(self, head: bool):
        self.path = Path(tempfile.mkdtemp(prefix="gsr"))
        self.head = head

    def ray_args(self) -> list[str]:
        """As gpu-stack-launch options (``--ray-arg=...``)."""
        return [f"--ray-arg={a}" for a in self.raw_args()]

    def raw_args(self) -> list[str]:
        """As ``ray start`` flags."""
        agent, grpc, metrics, runtime_env, manager, objects, client = free_ports(7)
        args = [
            f"--temp-dir={self.path}", "--disable-usage-stats",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
            f"--node-manager-port={manager}", f"--object-manager-port={objects}",
            "--object-store-memory=80000000",
        ]
        if self.head:
            args += ["--include-dashboard=false", f"--ray-client-server-port={client}"]
        return args

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class Launcher:
    """One gpu-stack-launch process, its log file, and its shutdown by PID."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path,
                 node_dir: RayNodeDir | None = None):
        self.name, self.node_dir = name, node_dir
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        cmd = [sys.executable, "-m", "gpu_stack_runtime.launcher", *argv]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def launcher_lines(self) -> list[str]:
        return [ln for ln in self.text().splitlines() if ln.startswith("gpu-stack-launch: ")]

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match:
        regex = re.compile(pattern)

        def found() -> re.Match | None:
            match = next((m for ln in self.launcher_lines() if (m := regex.search(ln))), None)
            if match is None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode} before "
                                     f"{pattern!r}:\n{self.text()[-3000:]}")
            return match

        return wait_for(found, f"{self.name}: {pattern!r}", timeout, interval=0.2,
                        context=lambda: self.text()[-3000:])

    def child_pid(self, name: str) -> int | None:
        match = re.search(rf"started {re.escape(name)} \(pid (\d+)\)", self.text())
        return int(match.group(1)) if match else None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is not None:
                self._log.close()

    def stop(self, timeout: float = 90) -> int:
        """SIGTERM the launcher (it forwards to its children); SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        if self.node_dir:
            self.node_dir.remove()
        return self.proc.returncode


def wait_http_ok(url: str, timeout: float, launcher: Launcher) -> float:
    import urllib.error
    import urllib.request

    start = time.monotonic()

    def ok() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        if launcher.proc.poll() is not None:
            raise AssertionError(f"{launcher.name} exited {launcher.proc.returncode}:\n"
                                 f"{launcher.text()[-4000:]}")
        return False

    wait_for(ok, f"{url} ready", timeout, interval=1, context=lambda: launcher.text()[-4000:])
    return time.monotonic() - start


def descendants(pids: list[int]) -> set[int]:
    """The given processes and every process below them, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, seen = list(pids), set()
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo += children.get(pid, [])
    return seen


def tree_rss_mib(pids: list[int]) -> float:
    """Resident memory now of the given processes and all their descendants."""
    total = 0
    for pid in descendants(pids):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def run_python(code: str, timeout: float = 300):
    """Run code in a fresh interpreter of this venv; return the JSON it prints last.

    torch, transformers and vLLM are imported only in such children, never in the
    pytest process: once ansible-core's module_utils are imported there (the unit
    tests do), its process-wide ``sys.intern`` patch makes ``import torch`` fail
    ("substitute_in_graph expects a function").
    """
    import json
    import textwrap

    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=base_env(),
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
