"""Start and stop the lab's vSphere simulator (one process per call, free port, by PID)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpu_lab.vsphere.build import build
from gpu_lab.vsphere.paths import lab_home

BINARY_MARK = "gpulab-vcsim-"
DEFAULT_USERNAME = "administrator@vsphere.local"


class LabStartError(RuntimeError):
    """The simulator did not come up."""


@dataclass
class Topology:
    """What the simulator builds (defaults: the reference site, 8 hosts x 2 GPUs)."""

    hosts: int = 8
    gpus_per_host: int = 2
    gpu_model: str = "a100-80g"
    vms: int | None = None
    datacenter: str = "gpu-dc"
    cluster: str = "gpu-cluster"
    host_prefix: str = "esxi-"
    vm_prefix: str = "ocp-worker-"
    vm_hw_version: str = "vmx-19"
    vm_memory_mb: int = 65536
    power_on: bool = True
    apply_now: bool = True
    reboot_delay_ms: int = 1000
    delay_ms: int = 0

    def host_names(self) -> list[str]:
        return [f"{self.host_prefix}{i}" for i in range(self.hosts)]

    def vm_names(self) -> list[str]:
        count = self.hosts if self.vms is None else self.vms
        return [f"{self.vm_prefix}{i}" for i in range(count)]

    def vm_hosts(self) -> dict[str, str]:
        """VM name -> the host it runs on (round-robin)."""
        hosts = self.host_names()
        return {vm: hosts[i % len(hosts)] for i, vm in enumerate(self.vm_names())}

    def args(self) -> list[str]:
        vms = self.hosts if self.vms is None else self.vms
        return [
            f"-hosts={self.hosts}", f"-gpus-per-host={self.gpus_per_host}",
            f"-gpu-model={self.gpu_model}", f"-vms={vms}", f"-datacenter={self.datacenter}",
            f"-cluster={self.cluster}", f"-host-prefix={self.host_prefix}",
            f"-vm-prefix={self.vm_prefix}", f"-vm-hw-version={self.vm_hw_version}",
            f"-vm-memory-mb={self.vm_memory_mb}", f"-power-on={str(self.power_on).lower()}",
            f"-apply-now={str(self.apply_now).lower()}",
            f"-reboot-delay-ms={self.reboot_delay_ms}", f"-delay-ms={self.delay_ms}",
        ]


@dataclass
class VsphereLab:
    """A running simulator: how to reach it and how to stop it."""

    hostname: str
    port: int
    username: str
    password: str = field(repr=False)
    validate_certs: bool
    ca_path: str | None
    thumbprint: str
    url: str
    fault_url: str
    pid: int
    topology: dict

    def to_json(self) -> dict:
        return asdict(self)

    def connection_env(self) -> dict[str, str]:
        """Environment variables the collection's vSphere options fall back to."""
        env = {
            "VMWARE_HOST": self.hostname,
            "VMWARE_PORT": str(self.port),
            "VMWARE_USER": self.username,
            "VMWARE_PASSWORD": self.password,
            "VMWARE_VALIDATE_CERTS": str(self.validate_certs).lower(),
        }
        if self.ca_path:
            env["VMWARE_CA_PATH"] = self.ca_path
        return env


def _read_ready(proc: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        ready = select.select([proc.stdout], [], [], 0.2)[0]
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith("READY "):
                    return json.loads(line[len("READY "):])
        elif proc.poll() is not None:
            break
    raise LabStartError(f"simulator did not report READY within {timeout:.0f}s")


def start(topology: Topology | None = None, *, tls: bool = True, password: str | None = None,
          username: str = DEFAULT_USERNAME, run_dir: Path | None = None,
          timeout: float = 120.0) -> VsphereLab:
    """Build if needed and start a simulator on a free loopback port."""
    topology = topology or Topology()
    binary = build()
    run_dir = Path(run_dir or lab_home() / "run")
    run_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    ca_path = run_dir / f"vsphere-ca-{tag}.pem" if tls else None
    log_path = run_dir / f"vsphere-{tag}.log"
    password = password or secrets.token_urlsafe(18)
    cmd = [str(binary), "-listen=127.0.0.1:0", f"-username={username}", *topology.args()]
    if ca_path:
        cmd.append(f"-ca-file={ca_path}")
    env = {**os.environ, "GPU_LAB_VSPHERE_PASSWORD": password}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        ready = _read_ready(proc, timeout)
    except LabStartError as exc:
        _terminate(proc.pid)
        tail = log_path.read_text(errors="replace")[-2000:]
        raise LabStartError(f"{exc}; simulator log:\n{tail}") from None
    proc.stdout.close()
    base = ready["url"].rsplit("/sdk", 1)[0]
    return VsphereLab(
        hostname=ready["host"], port=int(ready["port"]), username=username, password=password,
        validate_certs=tls, ca_path=str(ca_path) if ca_path else None,
        thumbprint=ready.get("thumbprint", ""), url=ready["url"],
        fault_url=f"{base}/gpulab/faults", pid=proc.pid,
        topology={**asdict(topology), "host_names": topology.host_names(),
                  "vm_hosts": topology.vm_hosts()},
    )


def _is_ours(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return BINARY_MARK.encode() in cmdline


def _terminate(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            done = os.waitpid(pid, os.WNOHANG)[0]
            if done == pid:
                return
        if not _is_ours(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop(lab: VsphereLab | int) -> None:
    """Stop a simulator by PID (only if that PID still is our simulator)."""
    pid = lab if isinstance(lab, int) else lab.pid
    if _is_ours(pid):
        _terminate(pid)
    if isinstance(lab, VsphereLab) and lab.ca_path:
        Path(lab.ca_path).unlink(missing_ok=True)


def is_running(lab: VsphereLab | int) -> bool:
    return _is_ours(lab if isinstance(lab, int) else lab.pid)
