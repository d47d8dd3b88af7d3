# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The olm_operator stage: ``run(client, request) -> result``.

Decide (resolve the package, channel and CSV; find the namespace's OperatorGroup),
act (server-side apply of Namespace, OperatorGroup, Subscription; dry run in check
mode), wait (approve only the target InstallPlan, CSV Succeeded, CRDs Established;
skipped in check mode by the one wait helper), diff (before/after per object).
Every input problem is raised by ``resolve``/``operator_group`` before the first write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.diff import merge_diffs
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.olm import (
    OlmOperator,
    OperatorSpec,
)


@dataclass
class Request:
    operator: OperatorSpec
    wait_timeout: float = 900.0
    check_mode: bool = False
    progress: Callable | None = None
    wait_options: dict = field(default_factory=dict)  # interval, clock, sleep (tests)


def run(client, req: Request) -> dict:
    if req.wait_timeout < 0:
        raise InvalidInputError(f"wait_timeout must be >= 0, got {req.wait_timeout}")
    olm = OlmOperator(client)
    spec = req.operator
    resolved = olm.resolve(spec)
    group = olm.operator_group(spec)
    changed, diffs = olm.ensure(spec, resolved, group, req.check_mode)
    target = resolved.csv if req.check_mode else olm.target_csv(spec, resolved)
    installed = olm.wait_installed(spec, target, timeout=req.wait_timeout, progress=req.progress,
                                   check_mode=req.check_mode, **req.wait_options)
    changed = changed + [f"InstallPlan/{n}" for n in installed["approved_install_plans"]]
    result = {**installed, "changed": bool(changed), "changed_objects": changed,
              "channel": resolved.channel,
              "diff": merge_diffs(diffs) if diffs else {"before": {}, "after": {}}}
    if req.check_mode:
        result["version"] = resolved.version
    return result
