# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The GPU fleet report, built from what was read (plain data in, plain data out).

One row per worker: the ESXi host, its worker VM and that VM's OpenShift node, the
host's GPUs (model, count, memory), passthrough state (capable / enabled / active /
waiting for a reboot), the passthrough devices the VM is configured with, and the
``nvidia.com/gpu`` the node reports allocatable. A VM or node that lost its GPUs (fewer
than expected, or none) is named in ``problems``.

``hardware`` is what the planner may assume from the fleet: GPU model and memory from
vSphere (from the node labels GPU Feature Discovery sets when vSphere was not read), and
the GPU nodes with their allocatable GPUs from the cluster.

Inputs
------
``vsphere``: ``{"hosts": {host: {"cluster", "gpus": [Gpu.as_dict()]}},
"vms": {vm: {"host", "power_state", "passthrough"}}}`` or None (not read).
``nodes``: ``[{"name", "allocatable", "labels"}]``.
``workers``: ``[{"host", "vm", "node", "gpus"}]`` (every key optional but one of host/vm).
"""

from __future__ import annotations

from collections import Counter

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)

GPU_RESOURCE = "nvidia.com/gpu"
OUR_GPU_NODE = "gpu-stack.llmops.io/gpu-node"
OUR_VM = "gpu-stack.llmops.io/vm"
OUR_GPUS = "gpu-stack.llmops.io/gpus-expected"
GFD_PRESENT = "nvidia.com/gpu.present"
GFD_PRODUCT = "nvidia.com/gpu.product"
GFD_MEMORY_MIB = "nvidia.com/gpu.memory"


def parse_workers(workers, gpus_per_vm=0) -> list[dict]:
    """Check the ``workers`` option; every problem is named before anything is read."""
    if not isinstance(gpus_per_vm, int) or isinstance(gpus_per_vm, bool) or gpus_per_vm < 0:
        raise InvalidInputError(f"gpus_per_vm must be a whole number >= 0, got {gpus_per_vm!r}")
    out, seen = [], set()
    for i, item in enumerate(workers or []):
        item = {k: v for k, v in (item or {}).items() if v not in (None, "")}
        if not item.get("host") and not item.get("vm"):
            raise InvalidInputError(f"workers[{i}]: give the ESXi host, the VM or both")
        gpus = item.get("gpus", gpus_per_vm or None)
        if gpus is not None and (not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1):
            raise InvalidInputError(f"workers[{i}]: gpus must be a whole number >= 1, got {gpus!r}")
        key = item.get("vm") or item["host"]
        if key in seen:
            raise InvalidInputError(f"workers: {key} is listed twice")
        seen.add(key)
        out.append({"host": item.get("host"), "vm": item.get("vm"), "node": item.get("node"),
                    "gpus": gpus})
    return out


def node_summary(node: dict) -> dict:
    """The parts of a Node object the report uses."""
    status = node.get("status") or {}
    value = (status.get("allocatable") or {}).get(GPU_RESOURCE, "0")
    try:
        allocatable = int(value)
    except (TypeError, ValueError):
        allocatable = 0
    return {"name": node["metadata"]["name"], "allocatable": allocatable,
            "labels": dict(node["metadata"].get("labels") or {})}


def _is_gpu_node(node: dict) -> bool:
    labels = node["labels"]
    return (labels.get(OUR_GPU_NODE) == "true" or labels.get(GFD_PRESENT) == "true"
            or node["allocatable"] > 0)


def _auto_workers(vsphere, nodes, gpus_per_vm) -> list[dict]:
    """Without a worker list: VMs with passthrough devices or named by a GPU node."""
    gpu_nodes = [n for n in nodes if _is_gpu_node(n)]
    if vsphere is None:
        return [{"host": None, "vm": n["labels"].get(OUR_VM), "node": n["name"],
                 "gpus": gpus_per_vm or None} for n in gpu_nodes]
    named = {n["labels"].get(OUR_VM) or n["name"] for n in gpu_nodes}
    vms = vsphere["vms"]
    workers = [{"host": vms[vm]["host"], "vm": vm, "node": None, "gpus": gpus_per_vm or None}
               for vm in sorted(vms) if vms[vm]["passthrough"] or vm in named]
    with_vm = {w["host"] for w in workers}
    workers += [{"host": h, "vm": None, "node": None, "gpus": None}
                for h, facts in vsphere["hosts"].items() if facts["gpus"] and h not in with_vm]
    return workers


def _gpu_groups(gpus: list[dict]) -> list[dict]:
    count = Counter((g.get("model") or g.get("device_name") or "unknown", g.get("memory_gb"))
                    for g in gpus)
    return [{"model": model, "memory_gib": memory, "count": n}
            for (model, memory), n in sorted(count.items(), key=lambda kv: str(kv[0]))]


def _find_node(worker: dict, nodes_by_name: dict) -> dict | None:
    if worker["node"]:
        return nodes_by_name.get(worker["node"])
    vm = worker["vm"]
    if not vm:
        return None
    by_label = [n for n in nodes_by_name.values() if n["labels"].get(OUR_VM) == vm]
    return by_label[0] if by_label else nodes_by_name.get(vm)


def _row(worker: dict, vsphere, nodes_by_name: dict) -> dict:
    vm_name, host = worker["vm"], worker["host"]
    vm = (vsphere or {}).get("vms", {}).get(vm_name) if vm_name else None
    if host is None and vm is not None:
        host = vm["host"]
    host_facts = (vsphere or {}).get("hosts", {}).get(host) or {"cluster": None, "gpus": []}
    gpus = host_facts["gpus"]
    node = _find_node(worker, nodes_by_name)
    labels = node["labels"] if node else {}
    expected = worker["gpus"]
    if expected is None and labels.get(OUR_GPUS, "").isdigit():
        expected = int(labels[OUR_GPUS])
    memory_mib = labels.get(GFD_MEMORY_MIB, "")
    return {
        "host": host, "cluster": host_facts.get("cluster"),
        "vm": vm_name, "vm_power_state": vm["power_state"] if vm else None,
        "vm_host": vm["host"] if vm else None,
        "node": node["name"] if node else worker["node"],
        "node_found": node is not None,
        "gpus": _gpu_groups(gpus),
        "passthrough": {
            "capable": sum(bool(g["passthrough_capable"]) for g in gpus),
            "enabled": sum(bool(g["passthrough_enabled"]) for g in gpus),
            "active": sum(bool(g["passthrough_active"]) for g in gpus),
            "reboot_pending": sum(bool(g["reboot_pending"]) for g in gpus),
        },
        "vm_gpus": vm["passthrough"] if vm else None,
        "vm_gpus_in_use": sum(1 for g in gpus if vm_name and g.get("bound_vm") == vm_name),
        "gpus_expected": expected,
        "node_allocatable_gpus": node["allocatable"] if node else None,
        "node_gpu_product": labels.get(GFD_PRODUCT),
        "node_gpu_memory_gib": round(int(memory_mib) / 1024, 1) if memory_mib.isdigit() else None,
    }


def _problems(row: dict, vsphere_read: bool, cluster_nodes: bool) -> list[str]:
    out = []
    vm, node, expected = row["vm"], row["node"], row["gpus_expected"]
    if vsphere_read and row["passthrough"]["reboot_pending"]:
        out.append(f"host {row['host']}: {row['passthrough']['reboot_pending']} GPU(s) wait "
                   "for a reboot to change passthrough")
    if vsphere_read and vm:
        if row["vm_power_state"] is None:
            out.append(f"VM {vm}: not found in vCenter")
        else:
            if row["host"] and row["vm_host"] != row["host"]:
                out.append(f"VM {vm} runs on {row['vm_host']}, not on {row['host']}")
            if row["vm_power_state"] != "poweredOn":
                out.append(f"VM {vm} is {row['vm_power_state']}: its GPUs are not in use")
            if expected and row["vm_gpus"] < expected:
                out.append(f"VM {vm} lost GPUs: {row['vm_gpus']} of {expected} passthrough "
                           "GPU(s) configured")
    if vm or node:
        if not row["node_found"]:
            if cluster_nodes:
                out.append(f"VM {vm}: no OpenShift node" if not node
                           else f"node {node}: not in the cluster")
        elif row["node_allocatable_gpus"] == 0:
            out.append(f"node {node} lost its GPUs: 0 allocatable {GPU_RESOURCE}"
                       + (f" (expected {expected})" if expected else ""))
        elif expected and row["node_allocatable_gpus"] < expected:
            out.append(f"node {node} lost GPUs: {row['node_allocatable_gpus']} of {expected} "
                       f"allocatable {GPU_RESOURCE}")
    return out


def _hardware(rows: list[dict]) -> tuple[dict, dict]:
    """The largest uniform slice (nodes x GPUs per node) and its GPU model and memory."""
    usable = [r for r in rows if (r["node_allocatable_gpus"] or 0) > 0]
    if not usable:
        return {}, {}
    best = max(sorted({r["node_allocatable_gpus"] for r in usable}),
               key=lambda g: (g * sum(r["node_allocatable_gpus"] >= g for r in usable), g))
    chosen = [r for r in usable if r["node_allocatable_gpus"] >= best]
    hardware = {"nodes": len(chosen), "gpus_per_node": best}
    sources = {"nodes": "cluster", "gpus_per_node": "cluster"}
    vs_models = {g["model"] for r in chosen for g in r["gpus"]}
    vs_memory = [g["memory_gib"] for r in chosen for g in r["gpus"] if g["memory_gib"]]
    if vs_memory and len(vs_memory) == sum(len(r["gpus"]) for r in chosen):
        hardware["gpu_memory_gib"], sources["gpu_memory_gib"] = float(min(vs_memory)), "vsphere"
    else:
        labelled = [r["node_gpu_memory_gib"] for r in chosen if r["node_gpu_memory_gib"]]
        if len(labelled) == len(chosen):
            hardware["gpu_memory_gib"], sources["gpu_memory_gib"] = min(labelled), "cluster"
    if vs_models:
        hardware["gpu_model"], sources["gpu_model"] = "/".join(sorted(vs_models)), "vsphere"
    else:
        products = {r["node_gpu_product"] for r in chosen if r["node_gpu_product"]}
        if products:
            hardware["gpu_model"], sources["gpu_model"] = "/".join(sorted(products)), "cluster"
    return hardware, sources


def _cell(value) -> str:
    return "-" if value is None else str(value)


def table(rows: list[dict]) -> list[str]:
    """A short fixed-width table, one line per row (problems as a last column)."""
    head = ("HOST", "VM", "NODE", "GPUS", "PT EN/ACT", "VM GPUS", "ALLOC", "PROBLEMS")
    lines = [head]
    for r in rows:
        gpus = ", ".join(f"{g['count']}x {g['model']}" for g in r["gpus"]) or (
            r["node_gpu_product"] or "-")
        pt = r["passthrough"]
        lines.append((_cell(r["host"]), _cell(r["vm"]), _cell(r["node"]), gpus,
                      f"{pt['enabled']}/{pt['active']}", _cell(r["vm_gpus"]),
                      _cell(r["node_allocatable_gpus"]), "; ".join(r["problems"]) or "ok"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)) + "  " + line[-1]
            for line in lines]


def build(vsphere, nodes: list[dict], workers: list[dict], gpus_per_vm: int = 0) -> dict:
    """The report: ``fleet`` rows, ``problems``, ``hardware`` (+ sources), ``table``."""
    nodes_by_name = {n["name"]: n for n in nodes}
    workers = [dict(w, gpus=w.get("gpus") or gpus_per_vm or None)
               for w in workers or _auto_workers(vsphere, nodes, gpus_per_vm)]
    rows = []
    for worker in workers:
        row = _row(worker, vsphere, nodes_by_name)
        row["problems"] = _problems(row, vsphere is not None, bool(nodes))
        rows.append(row)
    rows.sort(key=lambda r: (r["host"] or "", r["vm"] or "", r["node"] or ""))
    problems = [p for r in rows for p in r["problems"]]
    hardware, sources = _hardware(rows)
    total = sum(g["count"] for r in rows for g in r["gpus"])
    allocatable = sum(r["node_allocatable_gpus"] or 0 for r in rows)
    summary = (f"{len({r['host'] for r in rows if r['host']})} hosts, "
               f"{sum(1 for r in rows if r['vm'])} VMs, "
               f"{sum(1 for r in rows if r['node_found'])} nodes; "
               f"{total} GPUs on the hosts, {allocatable} allocatable; "
               + (f"{len(problems)} problem(s)" if problems else "no problem"))
    return {"fleet": rows, "problems": problems, "hardware": hardware,
            "hardware_sources": sources, "table": table(rows), "summary": summary}
