from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
    NotFoundError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.gpu import (
    GpuFilter,
    host_gpus,
    mmio_size_gb,
    parse_device_id,
    select_hosts,
    u16,
)

from .vsphere_fakes import PCI_IDS, host, inventory


@pytest.mark.parametrize(("memories", "size"), [
    ([80, 80], 512),   # 160 -> 256 -> x2
    ([80], 256),
    ([48, 48], 256),   # 96 -> 128 -> x2
    ([24], 64),
    ([94, 94], 512),   # 188 -> 256 -> x2
    ([], 0),
])
def test_mmio_size_rule(memories, size):
    assert mmio_size_gb(memories) == size


@pytest.mark.parametrize(("text", "value"),
                         [("0x20b5", 0x20B5), ("20B5", 0x20B5), ("2331", 0x2331)])
def test_parse_device_id(text, value):
    assert parse_device_id(text) == value


@pytest.mark.parametrize("bad", ["xyz", "0x12345", "", "20b5!"])
def test_parse_device_id_rejects(bad):
    with pytest.raises(InvalidInputError):
        parse_device_id(bad)


def test_u16_undoes_signed_shorts():
    assert u16(-28672) == 0x9000
    assert u16(0x20B5) == 0x20B5


def test_host_gpus_reads_only_nvidia_and_state():
    rec = host("esxi-0", enabled=(True, False), active=(False, False),
               bound={PCI_IDS[0]: "vm-9"})
    gpus = host_gpus(rec, {"vm-9": "ocp-worker-0"}, "c1", "dc1")
    assert [g.pci_id for g in gpus] == list(PCI_IDS)
    first = gpus[0]
    assert (first.device_id, first.vendor_id, first.model, first.memory_gb) == (
        "0x20b5", "0x10de", "a100-80g", 80)
    assert first.reboot_pending is True and gpus[1].reboot_pending is False
    assert first.bound_vm == "ocp-worker-0" and gpus[1].bound_vm is None
    assert first.as_dict()["cluster"] == "c1"


def test_high_device_ids_are_reported_unsigned():
    gpus = host_gpus(host("h", device_id=0x9000))
    assert gpus[0].device_id == "0x9000" and gpus[0].model is None


def test_filter_by_model_device_and_pci():
    gpus = host_gpus(host("h"))
    assert all(GpuFilter.build(["A100"]).matches(g) for g in gpus)
    assert all(GpuFilter.build(["a100-80g"]).matches(g) for g in gpus)
    assert not any(GpuFilter.build(["l40s"]).matches(g) for g in gpus)
    assert not any(GpuFilter.build(device_ids=["0x2331"]).matches(g) for g in gpus)
    only = [g.pci_id for g in gpus if GpuFilter.build(pci_ids=[PCI_IDS[1]]).matches(g)]
    assert only == [PCI_IDS[1]]


def test_select_hosts_errors_and_scopes():
    inv = inventory(host("esxi-1"), host("esxi-0"))
    assert [h.name for h in select_hosts(inv)] == ["esxi-0", "esxi-1"]
    assert [h.name for h in select_hosts(inv, hosts=["esxi-1"])] == ["esxi-1"]
    assert len(select_hosts(inv, clusters=["gpu-cluster"], datacenter="gpu-dc")) == 2
    with pytest.raises(NotFoundError, match="esxi-9"):
        select_hosts(inv, hosts=["esxi-0", "esxi-9"])
    with pytest.raises(NotFoundError, match="cluster"):
        select_hosts(inv, clusters=["other"])
    with pytest.raises(NotFoundError, match="datacenter"):
        select_hosts(inv, datacenter="other")
