"""Benchmark: GPU inventory and passthrough against the lab simulator with a fixed
per-call delay (a vCenter across a datacenter network). Prints measured ratios; it
asserts nothing (targets: inventory <= 1.5x one raw retrieve with <= 2 round-trips;
passthrough on 64 hosts >= 3x faster than community.vmware.vmware_host_passthrough in
one-call cluster mode).

    .venv/bin/python tests/benchmarks/bench_vsphere.py [--delay-ms 20] [--sizes 8,64,512]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "collections"), str(REPO / "tests" / "lab")]

from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere import (  # noqa: E402
    gpu_info,
    host_passthrough,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.client import (  # noqa: E402
    VsphereClient,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.connection import (  # noqa: E402
    ConnectionParams,
)
from gpu_lab import vsphere  # noqa: E402
from pyVmomi import SoapAdapter, vim, vmodl  # noqa: E402

ROUND_TRIPS = [0]
_original_invoke = SoapAdapter.SoapStubAdapter.InvokeMethod


def _counting_invoke(self, *args, **kwargs):
    ROUND_TRIPS[0] += 1
    return _original_invoke(self, *args, **kwargs)


SoapAdapter.SoapStubAdapter.InvokeMethod = _counting_invoke


@contextlib.contextmanager
def counted():
    start = ROUND_TRIPS[0]
    box = {}
    yield box
    box["round_trips"] = ROUND_TRIPS[0] - start


def _client(lab) -> VsphereClient:
    client = VsphereClient(ConnectionParams(hostname=lab.hostname, port=lab.port,
                                            username=lab.username, password=lab.password,
                                            ca_path=lab.ca_path))
    client.content  # noqa: B018 - log in outside the measurement
    return client


def _best(func, repeats: int):
    times, result = [], None
    for _repeat in range(repeats):
        t0 = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - t0)
    return min(times), result


def bench_inventory(size: int, delay_ms: int) -> None:
    lab = vsphere.start(vsphere.Topology(hosts=size, vms=0, delay_ms=delay_ms))
    try:
        client = _client(lab)
        repeats = 2 if size >= 512 else 3
        with counted() as ours_rt:
            ours_t, ours = _best(lambda: gpu_info.run(client), 1)
        ours_t = min(ours_t, _best(lambda: gpu_info.run(client), repeats - 1)[0])
        content = client.content
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[pc.TraversalSpec(
                name="view", path="view", skip=False, type=vim.view.ContainerView)])],
            propSet=[pc.PropertySpec(type=vim.HostSystem, pathSet=[
                "name", "parent", *gpu_info.INFO_HOST_PROPS])])
        raw_t, raw = _best(lambda: content.propertyCollector.RetrievePropertiesEx(
            specSet=[spec], options=pc.RetrieveOptions()), repeats)
        assert ours["total"] == size * 2 and len(raw.objects) == size
        print(f"inventory  hosts={size:4d}  ours={ours_t * 1000:8.1f} ms  "
              f"raw retrieve={raw_t * 1000:8.1f} ms  ratio={ours_t / raw_t:5.2f}x  "
              f"round-trips={ours_rt['round_trips']} (raw: 1 + view setup)")
        client.close()
    finally:
        vsphere.stop(lab)


def _playbook(lab, tasks, extra_env=None) -> float:
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as handle:
        yaml.safe_dump(play, handle)
    env = {**os.environ, **lab.connection_env(),
           "ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections"),
           "ANSIBLE_PYTHON_INTERPRETER": sys.executable, **(extra_env or {})}
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,",
           "-c", "local", handle.name]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    os.unlink(handle.name)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-3000:])
    return elapsed


def _all_enabled(lab) -> bool:
    client = _client(lab)
    try:
        return all(g["passthrough_enabled"] for g in gpu_info.run(client)["gpus"])
    finally:
        client.close()


def bench_passthrough(size: int, delay_ms: int, loop_sample: int) -> None:
    """Enable passthrough on every GPU of ``size`` hosts, three ways, each on a fresh lab.

    The per-host loop runs on ``loop_sample`` hosts and is scaled to ``size`` (each
    iteration is an independent module run, so the time is linear in the hosts).
    """
    loop_sample = min(loop_sample, size)
    topo = vsphere.Topology(hosts=size, vms=0, delay_ms=delay_ms)
    community_env = {"VMWARE_VALIDATE_CERTS": "false"}
    devices = [{"device": "0000:17:00.0"}, {"device": "0000:31:00.0"}]
    hosts = [f"esxi-{i}" for i in range(size)]
    runs = {
        "ours (esxi_gpu_passthrough)": [{"llmops.gpu_stack.esxi_gpu_passthrough":
                                         {"clusters": ["gpu-cluster"]}}],
        "community cluster mode": [{"community.vmware.vmware_host_passthrough":
                                    {"cluster": "gpu-cluster", "devices": devices}}],
        "community looped per host": [{"community.vmware.vmware_host_passthrough":
                                       {"esxi_hostname": "{{ item }}", "devices": devices},
                                       "loop": hosts[:loop_sample]}],
        "ansible-playbook baseline (debug task)": [{"ansible.builtin.debug": {"msg": "x"}}],
    }
    times = {}
    for name, tasks in runs.items():
        lab = vsphere.start(topo)
        try:
            times[name] = _playbook(lab, tasks, community_env if "community" in name else None)
            if name == "community looped per host":
                times[name] = times[name] * size / loop_sample
            elif "baseline" not in name and not _all_enabled(lab):
                raise RuntimeError(f"{name} did not enable every GPU")
        finally:
            vsphere.stop(lab)
    lab = vsphere.start(topo)
    try:
        client = _client(lab)
        with counted() as rt:
            t0 = time.perf_counter()
            host_passthrough.run(client, host_passthrough.Request(clusters=["gpu-cluster"]))
            inproc = time.perf_counter() - t0
        client.close()
    finally:
        vsphere.stop(lab)
    ours = times["ours (esxi_gpu_passthrough)"]
    for name, elapsed in times.items():
        note = f"  (measured on {loop_sample} hosts, scaled)" if "looped" in name else ""
        print(f"passthrough hosts={size}  {name:40s} {elapsed:7.2f} s{note}")
    print(f"passthrough hosts={size}  ours in-process: {inproc:.2f} s, {rt['round_trips']} "
          f"round-trips ({size} UpdatePassthruConfig + reads)")
    base = times["ansible-playbook baseline (debug task)"]
    cluster, looped = times["community cluster mode"], times["community looped per host"]
    print(f"passthrough ratio (playbook wall time): community cluster mode / ours = "
          f"{cluster / ours:.2f}x;  community looped / ours = {looped / ours:.2f}x")
    print(f"passthrough ratio (minus the playbook baseline): community cluster mode / ours = "
          f"{(cluster - base) / (ours - base):.2f}x;  community looped / ours = "
          f"{(looped - base) / (ours - base):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay-ms", type=int, default=20)
    parser.add_argument("--sizes", default="8,64,512")
    parser.add_argument("--passthrough-hosts", type=int, default=64)
    parser.add_argument("--loop-sample", type=int, default=8,
                        help="hosts the per-host loop really runs on (scaled to all)")
    args = parser.parse_args()
    vsphere.build()
    print(f"simulator delay per SOAP call: {args.delay_ms} ms")
    for size in (int(s) for s in args.sizes.split(",") if s):
        bench_inventory(size, args.delay_ms)
    bench_passthrough(args.passthrough_hosts, args.delay_ms, args.loop_sample)


if __name__ == "__main__":
    main()
