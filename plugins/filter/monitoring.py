# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The monitoring role's filters: the collection's monitoring rendering, unchanged.

``values | monitoring_manifests`` is ``monitoring.render.manifests(values)`` (the GitOps
export calls the same function); ``handover_results | monitoring_servers(service_results)``
is ``render.server_from_handover`` over the hand-overs read. Bad input becomes one filter
error, before anything is applied. Documentation: the ``.yml`` files beside this one.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    GpuStackError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.monitoring import render


def monitoring_manifests(values):
    try:
        return render.manifests(dict(values or {}))
    except GpuStackError as err:
        raise AnsibleFilterError(f"monitoring: {err}") from err


def monitoring_servers(handover_results, service_results=None):
    """The servers whose hand-over was read (``k8s_info`` results, one per server), each
    with the pod selector of its Service (the second loop's results, aligned)."""
    services = list(service_results or [])
    out = []
    for index, result in enumerate(handover_results or []):
        found = result.get("resources") or []
        if not found:
            continue
        service = services[index] if index < len(services) else {}
        selector = ((service.get("resources") or [{}])[0].get("spec") or {}).get("selector")
        out.append(render.server_from_handover(found[0].get("data") or {}, selector))
    return out


class FilterModule:
    def filters(self):
        return {"monitoring_manifests": monitoring_manifests,
                "monitoring_servers": monitoring_servers}
