"""Start or join Ray as KubeRay would, and wait until the cluster holds the planned GPUs.

KubeRay contract (ray-operator/controllers/ray/common/pod.go): for every Ray container
the operator generates ``ray start [--head] --block --dashboard-host=... --num-gpus=N
...`` from ``rayStartParams`` and the container's resource limits, and stores it in
the environment as ``KUBERAY_GEN_RAY_START_CMD``. Unless the pod template carries the
annotation ``ray.io/overwrite-container-cmd: "true"``, it also rewrites the container
command to ``<user command> && ulimit -n 65536; <ray start ... --block>``, which runs
the user's command *before* Ray (``--block`` never returns). So the serving pods set
that annotation and run ``gpu-stack-launch`` as their command; the launcher runs the
generated ``ray start`` itself (through ``/bin/sh`` as KubeRay does, so
``$REDIS_PASSWORD``-style references and quoted ``--resources`` JSON keep working),
keeps it as a supervised child (``--block``: if a Ray process dies, so does the pod),
and only then starts vLLM. Head pods also get ``RAY_ADDRESS=127.0.0.1:<port>`` and
``RAY_PORT``; worker pods ``RAY_ADDRESS=<head service FQDN>:<port>``.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpu_stack_runtime.common.errors import WaitTimeout
from gpu_stack_runtime.common.wait import WaitStatus, wait_for
from gpu_stack_runtime.launcher.errors import EXIT_GPUS, EXIT_USAGE, LaunchError

KUBERAY_CMD_ENV = "KUBERAY_GEN_RAY_START_CMD"
DEFAULT_RAY_PORT = 6379


def ray_executable() -> str:
    """The ``ray`` CLI next to this interpreter (a venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "ray"
    if beside.exists():
        return str(beside)
    return shutil.which("ray") or "ray"


def _has_flag(words: Sequence[str], flag: str) -> bool:
    return any(w == flag or w.startswith(flag + "=") for w in words)


def ray_start_command(
    role: str,
    environ: Mapping[str, str],
    *,
    address: str | None = None,
    port: int = DEFAULT_RAY_PORT,
    num_gpus: int | None = None,
    node_ip: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv that starts this pod's Ray node in the foreground (``--block``).

    With KubeRay's generated command in the environment it is used as is (plus
    ``--block`` and ``--node-ip-address`` when missing); otherwise one is built from
    the arguments: a head on ``port``, or a worker joining ``address``.
    """
    if role not in ("head", "worker"):
        raise LaunchError(f"unknown Ray role {role!r}")
    additions = list(extra)
    generated = environ.get(KUBERAY_CMD_ENV, "").strip()
    if generated:
        words = shlex.split(generated)
        if words[:2] != ["ray", "start"]:
            raise LaunchError(f"{KUBERAY_CMD_ENV} is not a 'ray start' command: {generated!r}")
        if ("--head" in words) != (role == "head"):
            raise LaunchError(f"{KUBERAY_CMD_ENV} does not start a {role} node: {generated!r}")
        if not _has_flag(words, "--block"):
            additions.append("--block")
        if node_ip and not _has_flag(words, "--node-ip-address"):
            additions.append(f"--node-ip-address={node_ip}")
        line = " ".join([generated, *(shlex.quote(a) for a in additions)])
        return ["/bin/sh", "-c", f"exec {line}"]
    argv = [ray_executable(), "start", "--block"]
    if role == "head":
        argv += ["--head", f"--port={port}"]
    else:
        if not address:
            raise LaunchError(
                f"a worker needs the head's address: set RAY_ADDRESS or {KUBERAY_CMD_ENV}",
                EXIT_USAGE,
            )
        argv.append(f"--address={address}")
    if num_gpus is not None:
        argv.append(f"--num-gpus={num_gpus}")
    if node_ip:
        argv.append(f"--node-ip-address={node_ip}")
    return argv + additions


@dataclass(frozen=True)
class GpuSnapshot:
    """The alive Ray nodes and the GPUs each one offers."""

    nodes: tuple[tuple[str, float], ...]

    @property
    def total(self) -> int:
        return int(sum(gpus for _name, gpus in self.nodes))

    def describe(self, needed: int) -> str:
        listing = ", ".join(f"{name}={gpus:g}" for name, gpus in self.nodes) or "none"
        return f"{self.total} of {needed} GPUs joined (nodes: {listing})"


class RayProbe:
    """Reads the cluster's GPUs through Ray's public API (``ray.init`` + ``ray.nodes``).

    Calling it before the GCS accepts connections raises ConnectionError quickly (a
    plain TCP check first: ``ray.init`` itself blocks for minutes on a missing GCS).
    Call ``close()`` before starting vLLM so the launcher is no longer a Ray driver.
    """

    def __init__(self, address: str, connect_timeout: float = 2.0):
        host, _sep, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise LaunchError(f"Ray address {address!r} is not HOST:PORT")
        self.address, self._host, self._port = address, host, int(port)
        self._connect_timeout = connect_timeout
        self._connected = False

    def _gcs_listening(self) -> None:
        try:
            with socket.create_connection((self._host, self._port), self._connect_timeout):
                pass
        except OSError as exc:
            raise ConnectionError(f"Ray GCS at {self.address} not reachable yet") from exc

    def __call__(self) -> GpuSnapshot:
        import ray

        if not self._connected:
            self._gcs_listening()
            ray.init(address=self.address, logging_level="ERROR", log_to_driver=False,
                     configure_logging=False)
            self._connected = True
        nodes = []
        for node in ray.nodes():
            if node.get("Alive"):
                name = node.get("NodeManagerAddress") or node.get("NodeName") or node["NodeID"]
                nodes.append((name, float(node.get("Resources", {}).get("GPU", 0.0))))
        return GpuSnapshot(tuple(sorted(nodes)))

    def close(self) -> None:
        if self._connected:
            import ray

            ray.shutdown()
            self._connected = False


def wait_for_gpus(
    probe: Callable[[], GpuSnapshot],
    needed: int,
    *,
    timeout: float,
    interval: float = 5.0,
    log: Callable[[str], None] = print,
    should_stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> GpuSnapshot:
    """Poll probe until the cluster holds ``needed`` GPUs; log progress every interval.

    The loop is the one wait helper (``common/wait.py``: monotonic clock, deadline, one
    last check at the deadline), polling every second at most. Raises LaunchError
    (EXIT_GPUS) with the last progress line on timeout, or when should_stop() turns
    true (a signal, or Ray's own process died).
    """
    if needed < 1:
        raise LaunchError(f"the layout needs {needed} GPUs; it must need at least 1")
    seen = {"status": f"0 of {needed} GPUs joined (Ray not reachable yet)", "joined": 0,
            "snapshot": None, "next_log": clock()}

    def _check() -> WaitStatus:
        try:
            snapshot = probe()
            seen.update(snapshot=snapshot, joined=snapshot.total,
                        status=snapshot.describe(needed))
        except ConnectionError as exc:
            seen.update(snapshot=None, joined=0, status=f"0 of {needed} GPUs joined ({exc})")
        done = seen["joined"] >= needed
        if done or clock() >= seen["next_log"]:
            log(seen["status"])
            seen["next_log"] = clock() + interval
        if not done and should_stop():
            raise LaunchError(f"stopped while waiting for GPUs: {seen['status']}", EXIT_GPUS)
        return WaitStatus(done=done, progress=seen["status"])

    try:
        wait_for(_check, timeout=timeout, what="GPUs", interval=min(1.0, interval),
                 tolerate=(), clock=clock, sleep=sleep)
    except WaitTimeout as exc:
        raise LaunchError(
            f"timed out after {timeout:g} s waiting for GPUs: {seen['status']}; "
            f"{needed - seen['joined']} missing",
            EXIT_GPUS,
        ) from exc
    return seen["snapshot"]
