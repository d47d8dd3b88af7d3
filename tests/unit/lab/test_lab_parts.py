"""Pure pieces of the lab: watch history, quantities, GPU naming, scheduling helpers,
KubeRay's start command, the catalog, the settings."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest
from gpu_lab.apiserver.errors import ApiError
from gpu_lab.apiserver.store import Store
from gpu_lab.apiserver.validation import canonical_quantity
from gpu_lab.config import LabSettings, kube_version_for
from gpu_lab.controllers.kuberay import RayClusterController
from gpu_lab.controllers.olm_catalog import Catalog
from gpu_lab.controllers.runtime import pod_mounts
from gpu_lab.controllers.scheduler import _tolerated, pod_requests
from gpu_lab.gpu_inventory import StaticGpuInventory, product_of, reference_site


def _cm(name: str) -> dict:
    return {"metadata": {"name": name, "namespace": "default"}}


def test_watch_history_replays_and_expires(tmp_path: Path) -> None:
    async def run() -> None:
        store = Store(tmp_path / "state.json", history=3)
        key = ("", "configmaps")
        for i in range(5):
            store.put(key, _cm(f"c{i}"))
        _watcher, backlog = store.watch(key, "default", store.rv - 2)
        assert [e.obj["metadata"]["name"] for e in backlog] == ["c3", "c4"]
        with pytest.raises(ApiError) as err:
            store.watch(key, "default", 2)
        assert (err.value.code, err.value.reason) == (410, "Expired")
        store.save()
        again = Store(tmp_path / "state.json")
        assert again.load() and again.rv == store.rv
        assert [o["metadata"]["name"] for o in again.list(key)] == [f"c{i}" for i in range(5)]
        with pytest.raises(ApiError):  # history does not survive a restart
            again.watch(key, None, store.rv - 1)

    asyncio.run(run())


@pytest.mark.parametrize(("value", "text"), [(2, "2"), (2.0, "2"), (0.5, "500m"),
                                             (1.25, "1250m")])
def test_quantities_are_served_as_strings(value: float, text: str) -> None:
    assert canonical_quantity(value) == text


def test_gpu_product_names() -> None:
    assert product_of("GA100 [A100 PCIe 80GB]", 0x20B5) == ("NVIDIA-A100-80GB-PCIe", 81920)
    assert product_of("GH100 [H100 PCIe]", None) == ("NVIDIA-H100-PCIe", 81559)
    assert product_of("GA100 [A100 PCIe 80GB]", None) == ("NVIDIA-A100-80GB-PCIe", 81920)
    assert product_of("Some [L4 24GB]", None) == ("NVIDIA-L4-24GB", 24576)


def test_static_inventory_is_mutable() -> None:
    inventory = StaticGpuInventory(reference_site(workers=2))
    assert {k: v.count for k, v in inventory.gpus_by_vm().items()} == {
        "ocp-worker-0": 2, "ocp-worker-1": 2}
    inventory.remove_gpus("ocp-worker-1")
    inventory.set("ocp-worker-5", 1)
    assert sorted(inventory.gpus_by_vm()) == ["ocp-worker-0", "ocp-worker-5"]


def test_pod_requests_and_tolerations() -> None:
    pod = {"spec": {"containers": [
        {"resources": {"requests": {"cpu": "500m", "nvidia.com/gpu": "1"}}},
        {"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}],
        "initContainers": [{"resources": {"requests": {"cpu": "4"}}}]}}
    assert pod_requests(pod) == {"cpu": Decimal(4), "nvidia.com/gpu": Decimal(1),
                                 "memory": Decimal(1024 ** 3)}
    taint = {"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"}
    assert not _tolerated(taint, [])
    assert _tolerated(taint, [{"key": "node-role.kubernetes.io/master", "operator": "Exists"}])
    assert _tolerated(taint, [{"operator": "Exists"}])
    assert not _tolerated(taint, [{"key": "other", "operator": "Exists"}])


def test_kuberay_start_command_counts_gpus() -> None:
    template = {"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "2",
                                                                  "cpu": "8"}}}]}}
    command = RayClusterController._start_command(
        "worker", {"rayStartParams": {"object-store-memory": "1000000"}}, template,
        "llm-head-svc.ns.svc.cluster.local:6379")
    assert command == ("ray start --address=llm-head-svc.ns.svc.cluster.local:6379 "
                       "--num-cpus=8 --num-gpus=2 --object-store-memory=1000000 --block")


def test_pod_mounts_honour_sub_paths() -> None:
    pod = {"spec": {"containers": [{"name": "c", "volumeMounts": [
        {"name": "w", "mountPath": "/models"},
        {"name": "w", "mountPath": "/cache", "subPath": "hf"}]}]}}
    mounts = pod_mounts(pod, {"w": Path("/data/pv")})
    assert mounts == {"c": {"/models": Path("/data/pv"), "/cache": Path("/data/pv/hf")}}


def test_catalog_publish_and_fail_persist(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.json")
    head = catalog.packages["gpu-operator-certified"].head("v25.3")
    assert head is not None and head.name == "gpu-operator-certified.v25.3.1"
    published = catalog.publish("gpu-operator-certified", "v25.3", "25.3.2")
    assert published.replaces == "gpu-operator-certified.v25.3.1"
    catalog.fail(published.name, "boom")
    again = Catalog(tmp_path / "catalog.json")
    assert again.packages["gpu-operator-certified"].head("v25.3").name == published.name
    assert again.failures == {published.name: "boom"}
    with pytest.raises(ApiError):
        again.publish("no-such-package", "stable", "1.0.0")
    annotations = again.csv_annotations(again.packages["nfd"],
                                        again.packages["nfd"].head("stable"))
    assert json.loads(annotations["alm-examples"])[0]["kind"] == "NodeFeatureDiscovery"


def test_settings_round_trip_and_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    monkeypatch.delenv("GPU_LAB_OCP_VERSION", raising=False)
    settings = LabSettings.load(tmp_path, ocp_version="4.19.2", port=1234, workers=None)
    settings.save()
    again = LabSettings.load(tmp_path)
    assert (again.ocp_version, again.port, again.workers) == ("4.19.2", 1234, 8)
    assert again.kube_version == "v1.32.5" and kube_version_for("4.16.3") == "v1.29.14"
    with pytest.raises(ValueError):
        LabSettings.load(tmp_path, ocp_version="four")


def test_ray_ports_are_chosen_below_the_kernels_ephemeral_range() -> None:
    """A port chosen now and bound later must not be one the kernel hands to an outgoing
    connection meanwhile, nor one of Ray's worker ports."""
    from gpu_lab.controllers import ray_ports

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    taken: set[int] = set()
    for _attempt in range(20):
        port = ray_ports.free_port(taken)
        assert port not in taken and port not in range(10002, 20000)
        if low > 20000:
            assert port < low
        taken.add(port)
