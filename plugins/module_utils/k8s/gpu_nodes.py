# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""GPU nodes: map worker VMs to OpenShift nodes, label them, report, wait for GPUs.

Labels are written with server-side apply under our field manager, so the labels we
set on a node are ours: applying a node with fewer labels removes exactly ours and
never a label another manager (NFD, the GPU Operator, an admin) set. A node that had
our labels and is no longer a GPU node gets an apply with none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.wait import (
    WaitStatus,
    wait_for,
)

GPU_PRESENT = "nvidia.com/gpu.present"
OUR_GPU_NODE = "gpu-stack.llmops.io/gpu-node"
OUR_VM = "gpu-stack.llmops.io/vm"
OUR_GPUS = "gpu-stack.llmops.io/gpus-expected"
NFD_PCI_LABEL = "feature.node.kubernetes.io/pci-10de.present"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass
class Worker:
    vm: str
    gpus: int


def parse_workers(workers: list) -> list[Worker]:
    """``[{vm, gpus}]`` -> workers; every problem named before anything is read or written."""
    out, seen = [], set()
    for i, item in enumerate(workers or []):
        vm, gpus = (item or {}).get("vm"), (item or {}).get("gpus")
        if not vm or not isinstance(vm, str):
            raise InvalidInputError(f"workers[{i}]: 'vm' (the worker VM's name) is required")
        if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
            raise InvalidInputError(f"workers[{i}] ({vm}): 'gpus' must be a whole number >= 1, "
                                    f"got {gpus!r}")
        if vm in seen:
            raise InvalidInputError(f"workers: VM {vm} is listed twice")
        seen.add(vm)
        out.append(Worker(vm, gpus))
    if not out:
        raise InvalidInputError("workers: at least one GPU worker VM is needed")
    return out


def map_nodes(workers: list[Worker], node_names: set[str], node_map: dict) -> dict[str, Worker]:
    """node name -> worker: by VM name, or by ``node_map`` (VM -> node) where given."""
    unknown_map = sorted(set(node_map or {}) - {w.vm for w in workers})
    if unknown_map:
        raise InvalidInputError("node_map names VMs that are not workers: "
                                + ", ".join(unknown_map))
    mapped, missing = {}, []
    for worker in workers:
        node = (node_map or {}).get(worker.vm, worker.vm)
        if node not in node_names:
            missing.append(f"{worker.vm} -> {node}")
        mapped[node] = worker
    if missing:
        raise InvalidInputError(
            "no OpenShift node for these worker VMs (VM -> node): " + ", ".join(missing)
            + "; set node_map for nodes not named like their VM")
    if len(mapped) != len(workers):
        raise InvalidInputError("node_map maps two VMs to the same node")
    return mapped


def desired_labels(worker: Worker, extra: dict) -> dict:
    labels = {GPU_PRESENT: "true", OUR_GPU_NODE: "true", OUR_VM: worker.vm,
              OUR_GPUS: str(worker.gpus)}
    labels.update({k: str(v) for k, v in (extra or {}).items()})
    return labels


def node_manifest(name: str, labels: dict, taints: list | None) -> dict:
    """A Node with only our labels (and taints): what ``label`` applies, and the GitOps
    export writes."""
    manifest = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels}}
    if taints:
        manifest["spec"] = {"taints": taints}
    return manifest


def allocatable(node: dict) -> int:
    value = ((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, "0")
    try:
        return int(value)
    except ValueError:
        return 0


def report(node: dict, worker: Worker | None) -> dict:
    labels = node["metadata"].get("labels") or {}
    return {"node": node["metadata"]["name"], "vm": worker.vm if worker else None,
            "gpus_expected": worker.gpus if worker else 0,
            "nfd_pci_label": labels.get(NFD_PCI_LABEL) == "true",
            "allocatable_gpus": allocatable(node),
            "labels": {k: v for k, v in labels.items()
                       if k in (GPU_PRESENT, OUR_GPU_NODE, OUR_VM, OUR_GPUS)}}


class GpuNodes:
    """The ocp_gpu_nodes service over a K8sClient."""

    def __init__(self, client):
        self.client = client

    def plan(self, workers: list, node_map: dict) -> dict[str, Worker]:
        parsed = parse_workers(workers)
        names = {n["metadata"]["name"] for n in self.client.list("v1", "Node")}
        return map_nodes(parsed, names, node_map)

    def label(self, mapped: dict[str, Worker], extra_labels: dict, taints: list | None,
              remove_stale: bool, check_mode: bool) -> tuple[list, dict]:
        """Apply our labels; returns (changed node names, diff per node)."""
        changed, diffs = [], {}
        for name, worker in sorted(mapped.items()):
            result = self.client.apply(node_manifest(name, desired_labels(worker, extra_labels),
                                                     taints), check_mode=check_mode)
            if result.changed:
                changed.append(name)
                diffs[name] = result.diff
        if remove_stale:
            ours = self.client.list("v1", "Node", label_selector=f"{OUR_GPU_NODE}=true")
            for node in ours:
                name = node["metadata"]["name"]
                if name in mapped:
                    continue
                result = self.client.apply(node_manifest(name, {}, None), check_mode=check_mode)
                if result.changed:
                    changed.append(name)
                    diffs[name] = result.diff
        return changed, diffs

    def reports(self, mapped: dict[str, Worker]) -> list[dict]:
        nodes = {n["metadata"]["name"]: n for n in self.client.list("v1", "Node")}
        return [report(nodes[name], worker) for name, worker in sorted(mapped.items())
                if name in nodes]

    def wait_allocatable(self, mapped: dict[str, Worker], timeout: float, progress=None,
                         **kwargs) -> WaitStatus:
        def _check() -> WaitStatus:
            nodes = {n["metadata"]["name"]: n for n in self.client.list("v1", "Node")}
            ready, short = [], []
            for name, worker in sorted(mapped.items()):
                have = allocatable(nodes.get(name, {}))
                (ready if have >= worker.gpus else short).append(name)
            return WaitStatus(
                done=not short, present=tuple(ready),
                missing=tuple(f"{n} ({allocatable(nodes.get(n, {}))}/{mapped[n].gpus} "
                              "nvidia.com/gpu)" for n in short),
                progress=f"{len(ready)} of {len(mapped)} GPU nodes allocatable")

        return wait_for(_check, timeout=timeout, what="allocatable nvidia.com/gpu on the GPU nodes",
                        progress=progress, **kwargs)
