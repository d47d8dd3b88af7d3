"""olm_runner.run against an in-memory cluster: install, rerun, check mode, timeout, bad input."""

from __future__ import annotations

import json

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    ConflictError,
    InvalidInputError,
    WaitTimeout,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import olm_runner
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.olm import OperatorSpec

from .fake_client import FakeClient, FakeClock

PKG, NS, CRD = "gpu-operator-certified", "nvidia-gpu-operator", "clusterpolicies.nvidia.com"
PINNED, HEAD = "gpu-operator-certified.v25.3.0", "gpu-operator-certified.v25.3.1"


def _olm(crds_established=True, extra_csvs=()):
    """Plays OLM: an InstallPlan per Subscription; once approved, the CSV and its CRD.
    extra_csvs: more CSVs the plan holds besides the subscribed one (a dependency, or
    a resolution that bundles another version)."""

    def _controller(cluster):
        for key in [k for k in cluster.objects if k[0] == "Subscription"]:
            sub = cluster.render(key)
            status = sub.get("status") or {}
            if not status.get("installPlanRef"):
                csv = sub["spec"].get("startingCSV") or HEAD
                cluster.put({"kind": "InstallPlan", "metadata": {"name": "install-1",
                                                                 "namespace": key[1]},
                             "spec": {"approved": sub["spec"]["installPlanApproval"] ==
                                      "Automatic",
                                      "clusterServiceVersionNames": [csv, *extra_csvs]}})
                cluster.put({"kind": "Subscription", "metadata": {"name": key[2],
                                                                  "namespace": key[1]},
                             "status": {"installPlanRef": {"name": "install-1"}}})
            plan = cluster.render(("InstallPlan", key[1], "install-1"))
            if plan and plan["spec"]["approved"] and not status.get("installedCSV"):
                csv = plan["spec"]["clusterServiceVersionNames"][0]
                cluster.put({"kind": "ClusterServiceVersion", "metadata": {
                    "name": csv, "namespace": key[1], "annotations": {"alm-examples": json.dumps(
                        [{"kind": "ClusterPolicy", "metadata": {"name": "gpu-cluster-policy"}}])}},
                    "spec": {"version": csv.rsplit(".v", 1)[1],
                             "customresourcedefinitions": {"owned": [{"name": CRD}]}},
                    "status": {"phase": "Succeeded"}})
                cluster.put({"kind": "CustomResourceDefinition", "metadata": {"name": CRD},
                             "status": {"conditions": [{"type": "Established", "status": str(
                                 crds_established)}]}})
                cluster.put({"kind": "Subscription", "metadata": {"name": key[2],
                                                                  "namespace": key[1]},
                             "status": {"installedCSV": csv}})

    return _controller


@pytest.fixture
def cluster():
    fake = FakeClient()
    fake.put({"kind": "PackageManifest", "metadata": {"name": PKG,
                                                      "namespace": "openshift-marketplace"},
              "status": {"catalogSource": "certified-operators", "defaultChannel": "v25.3",
                         "channels": [{"name": "v25.3", "currentCSV": HEAD, "entries": [
                             {"name": HEAD, "version": "25.3.1"},
                             {"name": PINNED, "version": "25.3.0"}]}]}})
    fake.controllers.append(_olm())
    return fake


def _request(check_mode=False, clock=None, **spec):
    opts = {"package": PKG, "namespace": NS, "catalog": "certified-operators",
            "starting_csv": PINNED, **spec}
    return olm_runner.Request(operator=OperatorSpec(**opts), wait_timeout=60,
                              check_mode=check_mode,
                              wait_options=(clock or FakeClock()).options())


def test_install_approves_only_the_pinned_csv_then_a_rerun_changes_nothing(cluster):
    result = olm_runner.run(cluster, _request())
    assert result["changed"] and result["csv"] == PINNED and result["version"] == "25.3.0"
    assert result["alm_examples"][0]["kind"] == "ClusterPolicy" and result["crds"] == [CRD]
    plan = cluster.render(("InstallPlan", NS, "install-1"))
    assert plan["spec"]["approved"] is True
    sub = cluster.render(("Subscription", NS, PKG))
    assert sub["spec"]["startingCSV"] == PINNED and sub["spec"]["installPlanApproval"] == "Manual"
    assert cluster.render(("OperatorGroup", NS, NS))["spec"] == {"targetNamespaces": [NS]}
    assert set(result["diff"]["after"]) == {f"Namespace/{NS}", f"OperatorGroup/{NS}",
                                            f"Subscription/{PKG}"}

    writes = len(cluster.writes)
    again = olm_runner.run(cluster, _request())
    assert not again["changed"] and again["changed_objects"] == []
    assert again["approved_install_plans"] == [] and again["diff"] == {"before": {}, "after": {}}
    # Namespace and Subscription applied again (no change); the OperatorGroup is reused
    assert cluster.writes[writes:] == [("apply", "Namespace", NS), ("apply", "Subscription", PKG)]


def test_check_mode_writes_nothing_and_says_what_would_change(cluster):
    before = cluster.snapshot()
    result = olm_runner.run(cluster, _request(check_mode=True))
    assert cluster.snapshot() == before and cluster.writes == []
    assert result["changed"] and result["csv"] == PINNED and result["version"] == "25.3.0"
    assert result["diff"]["before"][f"Subscription/{PKG}"] == {}
    assert result["diff"]["after"][f"Subscription/{PKG}"]["spec"]["startingCSV"] == PINNED


def test_the_wait_timeout_names_the_crd_still_missing(cluster):
    cluster.controllers[:] = [_olm(crds_established=False)]
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as err:
        olm_runner.run(cluster, _request(clock=clock))
    assert f"missing: CRD {CRD} Established" in err.value.msg
    assert "0 of 1 CRDs Established" in err.value.msg and clock.now >= 60


@pytest.mark.parametrize(("spec", "message"), [
    ({"channel": "v99"}, "has no channel v99"),
    ({"starting_csv": "gpu-operator-certified.v1.0.0"}, "is not in channel v25.3"),
    ({"catalog": "redhat-operators"}, "comes from catalog certified-operators"),
    ({"install_mode": "SingleNamespace"}, "needs target_namespace"),
    ({"approval": "Sometimes"}, "approval must be Manual or Automatic"),
])
def test_bad_input_is_refused_before_the_first_write(cluster, spec, message):
    with pytest.raises(InvalidInputError, match=message):
        olm_runner.run(cluster, _request(**spec))
    assert cluster.writes == []


@pytest.mark.parametrize("extra", [(HEAD,), ("nfd.v4.18.0", HEAD)])
def test_a_plan_holding_other_csvs_besides_the_pinned_one_is_refused_unapproved(cluster, extra):
    cluster.controllers[:] = [_olm(extra_csvs=extra)]
    with pytest.raises(ConflictError) as err:
        olm_runner.run(cluster, _request())
    for name in extra:
        assert name in err.value.msg
    assert f"besides {PINNED}" in err.value.msg and "approve it by hand" in err.value.msg
    assert err.value.details["csvs"] == sorted([PINNED, *extra])
    # read back: the plan is still unapproved, nothing was installed
    assert cluster.render(("InstallPlan", NS, "install-1"))["spec"]["approved"] is False
    assert ("apply", "InstallPlan", "install-1") not in cluster.writes
    assert cluster.render(("ClusterServiceVersion", NS, PINNED)) is None


def test_a_plan_of_the_pinned_csv_alone_is_approved_once(cluster):
    result = olm_runner.run(cluster, _request())
    assert result["approved_install_plans"] == ["install-1"]
    assert cluster.writes.count(("apply", "InstallPlan", "install-1")) == 1
