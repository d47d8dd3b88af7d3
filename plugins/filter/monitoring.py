# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The monitoring role's filters: the collection's monitoring rendering, unchanged.

``values | monitoring_manifests`` is ``monitoring.render.manifests(values)`` (the GitOps
export calls the same function); ``handovers | monitoring_servers(services)`` is
``render.server_from_handover`` over the hand-over ConfigMaps read. Bad input becomes one filter
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


def monitoring_servers(handovers, services=None):
    """One server per hand-over ConfigMap, with the pod selector of the Service it names
    (found among ``services`` by namespace and name)."""
    selectors = {(s["metadata"].get("namespace"), s["metadata"]["name"]):
                 (s.get("spec") or {}).get("selector") for s in services or []}
    out = []
    for handover in handovers or []:
        data = handover.get("data") or {}
        selector = selectors.get((data.get("namespace"), data.get("service")))
        out.append(render.server_from_handover(data, selector))
    return out


class FilterModule:
    def filters(self):
        return {"monitoring_manifests": monitoring_manifests,
                "monitoring_servers": monitoring_servers}
