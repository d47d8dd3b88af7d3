"""The k8s service layer without a server: error mapping, node mapping, OLM resolution."""

from __future__ import annotations

import json

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    AuthError,
    ConflictError,
    ConnectionFailedError,
    InvalidInputError,
    NotFoundError,
    TransientError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import gpu_nodes, olm
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import translate


class _ApiError(Exception):
    def __init__(self, status, message="boom", headers=None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        self.body = json.dumps({"kind": "Status", "message": message})


@pytest.mark.parametrize(("status", "kind"), [
    (409, ConflictError), (401, AuthError), (403, AuthError), (404, NotFoundError),
    (422, InvalidInputError), (400, InvalidInputError), (429, TransientError),
    (500, TransientError), (503, TransientError), (None, ConnectionFailedError),
])
def test_translate_maps_status_codes(status, kind):
    err = translate(_ApiError(status, "the server said so"), "apply ConfigMap a")
    assert isinstance(err, kind)
    if status is not None:
        assert err.msg == "apply ConfigMap a: the server said so"


def test_translate_keeps_retry_after():
    err = translate(_ApiError(429, headers={"Retry-After": "3"}), "get")
    assert err.retry_after == 3.0


def test_workers_are_validated_and_mapped():
    workers = gpu_nodes.parse_workers([{"vm": "w0", "gpus": 2}, {"vm": "w1", "gpus": 1}])
    mapped = gpu_nodes.map_nodes(workers, {"w0", "node-1"}, {"w1": "node-1"})
    assert {n: w.vm for n, w in mapped.items()} == {"w0": "w0", "node-1": "w1"}
    with pytest.raises(InvalidInputError, match="VM w0 is listed twice"):
        gpu_nodes.parse_workers([{"vm": "w0", "gpus": 2}, {"vm": "w0", "gpus": 2}])
    with pytest.raises(InvalidInputError, match="at least one GPU worker"):
        gpu_nodes.parse_workers([])
    with pytest.raises(InvalidInputError, match="maps two VMs to the same node"):
        gpu_nodes.map_nodes(workers, {"n"}, {"w0": "n", "w1": "n"})


def test_labels_and_report():
    worker = gpu_nodes.Worker("w0", 2)
    labels = gpu_nodes.desired_labels(worker, {"pool": 1})
    assert labels["nvidia.com/gpu.present"] == "true" and labels["pool"] == "1"
    node = {"metadata": {"name": "w0", "labels": {**labels, gpu_nodes.NFD_PCI_LABEL: "true",
                                                  "other": "x"}},
            "status": {"allocatable": {"nvidia.com/gpu": "2"}}}
    report = gpu_nodes.report(node, worker)
    assert report["nfd_pci_label"] is True and report["allocatable_gpus"] == 2
    assert "other" not in report["labels"] and "pool" not in report["labels"]


class _FakeClient:
    def __init__(self, manifests, groups=()):
        self.manifests, self.groups = manifests, list(groups)

    def get(self, api_version, kind, name, namespace=None):
        return self.manifests.get(name)

    def list(self, api_version, kind, namespace=None, **_):
        return self.groups if kind == "OperatorGroup" else list(self.manifests.values())


def _manifest(name, catalog, channels, default):
    return {"metadata": {"name": name}, "status": {
        "catalogSource": catalog, "defaultChannel": default,
        "channels": [{"name": ch, "currentCSV": csvs[-1],
                      "entries": [{"name": c, "version": c.split(".v")[-1]} for c in csvs]}
                     for ch, csvs in channels.items()]}}


PM = {"op": _manifest("op", "cat", {"stable": ["op.v1.0", "op.v1.1"], "beta": ["op.v2.0"]},
                      "stable")}


def test_resolve_defaults_to_the_channel_head():
    resolved = olm.OlmOperator(_FakeClient(PM)).resolve(olm.OperatorSpec("op", "ns", "cat"))
    assert (resolved.channel, resolved.csv, resolved.version, resolved.head) == (
        "stable", "op.v1.1", "1.1", "op.v1.1")
    pinned = olm.OlmOperator(_FakeClient(PM)).resolve(
        olm.OperatorSpec("op", "ns", "cat", starting_csv="op.v1.0"))
    assert pinned.csv == "op.v1.0" and pinned.head == "op.v1.1"


@pytest.mark.parametrize(("spec", "message"), [
    (olm.OperatorSpec("op", "ns", "other"), "comes from catalog cat, not other"),
    (olm.OperatorSpec("op", "ns", "cat", channel="nope"), "has no channel nope; channels: beta"),
    (olm.OperatorSpec("op", "ns", "cat", starting_csv="op.v2.0"), "is not in channel stable"),
    (olm.OperatorSpec("op", "ns", "cat", install_mode="SingleNamespace"), "needs target_namespace"),
    (olm.OperatorSpec("gone", "ns", "cat"), "catalog cat has: op"),
])
def test_resolve_refuses(spec, message):
    with pytest.raises(InvalidInputError, match=message):
        olm.OlmOperator(_FakeClient(PM)).resolve(spec)


def test_operator_group_reuse_and_conflicts():
    own = {"metadata": {"name": "g"}, "spec": {"targetNamespaces": ["ns"]}}
    assert olm.OlmOperator(_FakeClient(PM, [own])).operator_group(
        olm.OperatorSpec("op", "ns", "cat")) == "g"
    with pytest.raises(ConflictError, match="needs all namespaces"):
        olm.OlmOperator(_FakeClient(PM, [own])).operator_group(
            olm.OperatorSpec("op", "ns", "cat", install_mode="AllNamespaces"))
    with pytest.raises(ConflictError, match="has 2 OperatorGroups"):
        olm.OlmOperator(_FakeClient(PM, [own, own])).operator_group(
            olm.OperatorSpec("op", "ns", "cat"))
