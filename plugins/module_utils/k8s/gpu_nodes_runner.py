# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The ocp_gpu_nodes stage: ``run(client, request) -> result``.

Decide (parse the workers and taints, map every VM to its node; any problem raised
before the first write), act (label the GPU nodes, unlabel stale ones; dry run in
check mode), wait (allocatable ``nvidia.com/gpu``, skipped in check mode by the one
wait helper), diff (before/after per node), report (one line per GPU node).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.diff import merge_diffs
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.gpu_nodes import GpuNodes

WAIT_CHOICES = ("none", "allocatable")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass
class Request:
    workers: list  # [{"vm": str, "gpus": int}]
    node_map: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    taints: list = field(default_factory=list)
    label: bool = True
    remove_stale: bool = True
    wait_for: str = "none"
    wait_timeout: float = 600.0
    check_mode: bool = False
    progress: Callable | None = None
    wait_options: dict = field(default_factory=dict)  # interval, clock, sleep (tests)


def check_taints(taints: list) -> None:
    for i, taint in enumerate(taints or []):
        if not isinstance(taint, dict) or not taint.get("key"):
            raise InvalidInputError(f"taints[{i}]: 'key' is required")
        if taint.get("effect") not in TAINT_EFFECTS:
            raise InvalidInputError(f"taints[{i}] ({taint['key']}): 'effect' must be one of "
                                    f"{', '.join(TAINT_EFFECTS)}, got {taint.get('effect')!r}")


def run(client, req: Request) -> dict:
    if req.wait_for not in WAIT_CHOICES:
        raise InvalidInputError(f"wait_for must be one of {', '.join(WAIT_CHOICES)}, "
                                f"got {req.wait_for!r}")
    check_taints(req.taints)
    service = GpuNodes(client)
    mapped = service.plan(req.workers, req.node_map)
    changed, diffs = [], {}
    if req.label:
        changed, diffs = service.label(mapped, req.labels, req.taints, req.remove_stale,
                                       req.check_mode)
    result = {"changed": bool(changed), "changed_nodes": changed}
    if req.wait_for == "allocatable":
        status = service.wait_allocatable(mapped, timeout=req.wait_timeout,
                                          progress=req.progress, check_mode=req.check_mode,
                                          **req.wait_options)
        result["wait"] = status.progress
    result["nodes"] = service.reports(mapped)
    result["diff"] = merge_diffs(diffs) if diffs else {"before": {}, "after": {}}
    return result
