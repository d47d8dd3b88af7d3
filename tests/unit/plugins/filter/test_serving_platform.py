"""The serving platform's objects (k8s/serving_platform.py) and the gpu_operators role's
filter over them: the DSCInitialization and DataScienceCluster the role applies and the
GitOps export writes, one rendering for both."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.llmops.gpu_stack.plugins.filter.serving_platform import (
    FilterModule,
    serving_platform_object,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import serving_platform


def test_the_dsc_sets_only_kserve_managed():
    dsc = serving_platform_object("DataScienceCluster", name="my-dsc")
    assert dsc == {"apiVersion": "datasciencecluster.opendatahub.io/v2",
                   "kind": "DataScienceCluster", "metadata": {"name": "my-dsc"},
                   "spec": {"components": {"kserve": {"managementState": "Managed"}}}}
    assert serving_platform_object("DataScienceCluster")["metadata"]["name"] == "default-dsc"


def test_the_dsci_names_the_applications_namespace():
    dsci = serving_platform_object("DSCInitialization", applications_namespace="opendatahub")
    assert dsci["apiVersion"] == "dscinitialization.opendatahub.io/v2"
    assert dsci["metadata"] == {"name": "default-dsci"}
    assert dsci["spec"] == {"applicationsNamespace": "opendatahub",
                            "monitoring": {"managementState": "Removed"}}
    # the export's: the applications namespace alone (the operator's own DSCI has it)
    exported_dsci, exported_dsc = serving_platform.exported("opendatahub")
    assert exported_dsci["spec"] == {"applicationsNamespace": "opendatahub"}
    assert {**exported_dsci, "spec": dsci["spec"]} == dsci
    assert exported_dsc == serving_platform_object("DataScienceCluster")


def test_bad_input_is_one_filter_error():
    with pytest.raises(AnsibleFilterError, match="applications_namespace"):
        serving_platform_object("DSCInitialization")
    with pytest.raises(AnsibleFilterError, match="'DSC' is not"):
        serving_platform_object("DSC")
    with pytest.raises(InvalidInputError, match="applications_namespace"):
        serving_platform.dsci("")
    assert FilterModule().filters() == {"serving_platform_object": serving_platform_object}
