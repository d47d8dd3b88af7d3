"""The gpu_operators role's serving platform (the kserve backend's KServe) in the lab:
Open Data Hub through OLM, the DSCInitialization and a DataScienceCluster with KServe
managed, then the InferenceService CRD served. Read back from the lab's API; check mode
first, a rerun that changes nothing, and a release not known to work on the cluster's
OpenShift refused before any write."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from .k8s_helpers import OLM, api, custom, serving_platform

pytestmark = [pytest.mark.lab, pytest.mark.slow]
OCP = "4.19.10"  # the default release table knows 3.0 on 4.19 and 4.20
ODH_NS = "openshift-operators"
DSC = ("datasciencecluster.opendatahub.io", "v2", "datascienceclusters")
DSCI = ("dscinitialization.opendatahub.io", "v2", "dscinitializations")
ISVC_CRD = "inferenceservices.serving.kserve.io"


def _stats(out: str) -> dict:
    return json.loads(out[:out.rindex("}") + 1])["stats"]["localhost"]


def _cluster_objects(lab, group: str, version: str, plural: str) -> list[dict]:
    objs = client.CustomObjectsApi(api(lab))
    try:
        return objs.list_cluster_custom_object(group, version, plural)["items"]
    except client.ApiException as exc:
        if exc.status == 404:
            return []
        raise


def _crds(lab) -> set[str]:
    ext = client.ApiextensionsV1Api(api(lab))
    return {c.metadata.name for c in ext.list_custom_resource_definition().items}


@pytest.fixture(scope="module")
def lab(k8s_lab_factory):
    return k8s_lab_factory(ocp_version=OCP, workers=2)


def test_check_mode_then_install_then_no_change(lab, tmp_path):
    crds = _crds(lab)
    rc, _tasks, out = serving_platform(lab, tmp_path, "odh", "--check")
    assert rc == 0, out[-3000:]
    assert custom(lab, OLM, "subscriptions", ODH_NS) == [] and _crds(lab) == crds

    rc, _tasks, out = serving_platform(lab, tmp_path, "odh")
    assert rc == 0, out[-3000:]
    assert _stats(out)["changed"] > 0
    (sub,) = custom(lab, OLM, "subscriptions", ODH_NS)
    assert sub["spec"]["name"] == "opendatahub-operator"
    assert sub["spec"]["installPlanApproval"] == "Manual"
    assert sub["spec"]["startingCSV"] == "opendatahub-operator.v3.0.0"
    phases = {c["metadata"]["name"]: c["status"]["phase"]
              for c in custom(lab, OLM, "clusterserviceversions", ODH_NS)}
    assert phases == {"opendatahub-operator.v3.0.0": "Succeeded"}
    (dsci,) = _cluster_objects(lab, *DSCI)
    assert dsci["spec"]["applicationsNamespace"] == "opendatahub"
    (dsc,) = _cluster_objects(lab, *DSC)
    assert dsc["metadata"]["name"] == "default-dsc"
    # only KServe named (the CRD defaults its rawDeploymentServiceConfig)
    assert list(dsc["spec"]["components"]) == ["kserve"]
    assert dsc["spec"]["components"]["kserve"]["managementState"] == "Managed"
    ready = {c["type"]: c["status"] for c in dsc["status"]["conditions"]}
    assert ready == {"Ready": "True"}
    assert ISVC_CRD in _crds(lab)

    rc, _tasks, out = serving_platform(lab, tmp_path, "odh")
    assert rc == 0 and _stats(out)["changed"] == 0, out[-3000:]
    rc, _tasks, out = serving_platform(lab, tmp_path, "odh", "--check")
    assert rc == 0 and _stats(out)["changed"] == 0, out[-3000:]


def test_a_release_not_known_on_this_openshift_is_refused_before_any_write(lab, tmp_path):
    before = {ns.metadata.name for ns in client.CoreV1Api(api(lab)).list_namespace().items}
    rc, _tasks, out = serving_platform(
        lab, tmp_path, "rhoai", gpu_operators_serving_platform_ocp={"rhoai": {"3.0": ["4.20"]}})
    assert rc != 0
    assert "rhoai 3.0 (rhods-operator.v3.0.0) is not known to work on OpenShift 4.19" in out
    assert "3.0 on OpenShift 4.20" in out
    after = {ns.metadata.name for ns in client.CoreV1Api(api(lab)).list_namespace().items}
    assert after == before and "redhat-ods-operator" not in after
