# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The gpu_operators role's filter: the serving platform's DSCInitialization and
DataScienceCluster from ``k8s/serving_platform.py``, the rendering the GitOps export
uses too. Documentation: ``serving_platform_object.yml`` beside this one.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    GpuStackError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import serving_platform


def serving_platform_object(kind, applications_namespace="", name=""):
    try:
        if kind == "DSCInitialization":
            return serving_platform.dsci(applications_namespace,
                                         name or serving_platform.DEFAULT_DSCI)
        if kind == "DataScienceCluster":
            return serving_platform.dsc(name or serving_platform.DEFAULT_DSC)
    except GpuStackError as err:
        raise AnsibleFilterError(f"serving platform: {err}") from err
    raise AnsibleFilterError(f"serving platform: kind {kind!r} is not DSCInitialization "
                             "or DataScienceCluster")


class FilterModule:
    def filters(self):
        return {"serving_platform_object": serving_platform_object}
