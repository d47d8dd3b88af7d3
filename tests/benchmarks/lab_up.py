"""Lab OpenShift: time for ``gpu-lab up`` and memory with the reference site deployed.

Prints measured values and their ratio to the targets (up < 15 s, memory < 500 MB);
a ratio below 1.0 meets the target. Run: ``.venv/bin/python tests/benchmarks/lab_up.py``.

1. ``gpu-lab up --no-vsphere`` in a fresh home with a cold CRD cache (first run on a
   machine: the upstream CRD YAML is parsed once), then ``down`` and ``up`` again (warm).
2. In-process, the reference site (8 workers x 2 GPUs, fake vSphere inventory): OLM
   installs NFD, the GPU Operator and KubeRay, ClusterPolicy makes 16 GPUs allocatable,
   a RayCluster with one worker per GPU node runs; peak RSS of this process (server and
   client together, so an upper bound for the server).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAB = Path(__file__).resolve().parents[1] / "lab"
sys.path.insert(0, str(LAB))

UP_TARGET_S = 15.0
MEMORY_TARGET_MB = 500.0


def _cli(home: Path, *args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(LAB), "GPU_LAB_HOME": str(home),
           "GPU_LAB_CACHE": str(home / "cache")}
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "gpu_lab.cli", *args], env=env, check=True,
                   capture_output=True, timeout=120)
    return time.monotonic() - started


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure_up() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        cold = _cli(home, "up", "--no-vsphere")
        pid = int((home / "k8s" / "apiserver.pid").read_text())
        idle = _rss_mb(pid)
        _cli(home, "down")
        warm = _cli(home, "up", "--no-vsphere")
        _cli(home, "down")
    print(f"gpu-lab up, cold (CRDs parsed): {cold:.2f} s  ratio {cold / UP_TARGET_S:.2f}")
    print(f"gpu-lab up, warm:               {warm:.2f} s  ratio {warm / UP_TARGET_S:.2f}")
    print(f"daemon RSS, idle cluster:       {idle:.0f} MB  ratio {idle / MEMORY_TARGET_MB:.2f}")


def _wait(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out: {what}")


def measure_reference_site() -> None:
    from gpu_lab.apiserver.server import LabServer
    from gpu_lab.config import LabSettings
    from gpu_lab.gpu_inventory import StaticGpuInventory, reference_site
    from kubernetes import client, config
    from kubernetes.dynamic import DynamicClient

    with tempfile.TemporaryDirectory() as tmp:
        settings = LabSettings(home=Path(tmp), time_scale=0.05)
        server = LabServer(settings, gpu_inventory=StaticGpuInventory(reference_site()))
        server.start_in_thread()
        api = config.new_client_from_config(server.kubeconfig)
        dyn, core = DynamicClient(api), client.CoreV1Api(api)
        olm = "operators.coreos.com"
        for ns, package, source, channel in (
                ("openshift-nfd", "nfd", "redhat-operators", "stable"),
                ("nvidia-gpu-operator", "gpu-operator-certified", "certified-operators", "v25.3"),
                ("kuberay", "kuberay-operator", "community-operators", "stable")):
            core.create_namespace({"metadata": {"name": ns}})
            dyn.resources.get(api_version=f"{olm}/v1", kind="OperatorGroup").create(
                namespace=ns, body={"apiVersion": f"{olm}/v1", "kind": "OperatorGroup",
                                    "metadata": {"name": ns}, "spec": {}})
            dyn.resources.get(api_version=f"{olm}/v1alpha1", kind="Subscription").create(
                namespace=ns, body={"apiVersion": f"{olm}/v1alpha1", "kind": "Subscription",
                                    "metadata": {"name": package},
                                    "spec": {"name": package, "source": source,
                                             "channel": channel,
                                             "sourceNamespace": "openshift-marketplace"}})
        ext = client.ApiextensionsV1Api(api)
        _wait(lambda: {"rayclusters.ray.io", "clusterpolicies.nvidia.com",
                       "nodefeaturediscoveries.nfd.openshift.io"} <= {
            c.metadata.name for c in ext.list_custom_resource_definition().items}, "CRDs")
        dyn = DynamicClient(api)
        csvs = dyn.resources.get(api_version=f"{olm}/v1alpha1", kind="ClusterServiceVersion")
        examples = {}
        for csv in csvs.get().items:
            for example in json.loads(csv.metadata.annotations["alm-examples"]):
                examples[example["kind"]] = example
        dyn.resources.get(api_version="nfd.openshift.io/v1", kind="NodeFeatureDiscovery").create(
            body=examples["NodeFeatureDiscovery"], namespace="openshift-nfd")
        dyn.resources.get(api_version="nvidia.com/v1", kind="ClusterPolicy").create(
            body=examples["ClusterPolicy"])
        _wait(lambda: sum(int((n.status.allocatable or {}).get("nvidia.com/gpu", "0"))
                          for n in core.list_node().items) == 16, "16 GPUs allocatable")
        cluster = examples["RayCluster"]
        group = cluster["spec"]["workerGroupSpecs"][0]
        group.update(replicas=8, minReplicas=8, maxReplicas=8)
        group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 2
        rcs = dyn.resources.get(api_version="ray.io/v1", kind="RayCluster")
        rcs.create(body=cluster, namespace="kuberay")
        _wait(lambda: (rcs.get(name="raycluster-sample", namespace="kuberay").status or {}).get(
            "state") == "ready", "RayCluster ready")
        objects = sum(len(server.store.list(k)) for k in server.store.resource_keys())
        server.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"reference site deployed ({objects} objects): peak RSS {peak:.0f} MB  "
          f"ratio {peak / MEMORY_TARGET_MB:.2f}")


if __name__ == "__main__":
    measure_up()
    measure_reference_site()
