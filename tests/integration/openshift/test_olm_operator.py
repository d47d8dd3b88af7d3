"""olm_operator against the lab's OLM, read back with the plain kubernetes client."""

from __future__ import annotations

import pytest
from kubernetes import client

from ..lab.waiting import wait_for
from .k8s_helpers import OLM, api, custom, lab_post, namespaces, run_module

pytestmark = pytest.mark.lab

GPU = {"package": "gpu-operator-certified", "namespace": "nvidia-gpu-operator",
       "catalog": "certified-operators", "channel": "v25.3",
       "starting_csv": "gpu-operator-certified.v25.3.0", "wait_timeout": 120}


def _plans(lab, ns):
    return {p["spec"]["clusterServiceVersionNames"][0]: p["spec"]["approved"]
            for p in custom(lab, OLM, "installplans", ns)}


def test_manual_pinned_install_never_approves_newer(k8s_lab_factory, tmp_path):
    lab = k8s_lab_factory()
    rc, check, out = run_module(lab, tmp_path, "olm_operator", GPU, extra=("--check",))
    assert rc == 0, out
    assert check["changed"] and check["csv"] == "gpu-operator-certified.v25.3.0"
    assert "nvidia-gpu-operator" not in namespaces(lab)  # check mode wrote nothing

    rc, first, out = run_module(lab, tmp_path, "olm_operator", GPU)
    assert rc == 0, out
    assert first["csv"] == "gpu-operator-certified.v25.3.0" and first["version"] == "25.3.0"
    assert sorted(first["crds"]) == ["clusterpolicies.nvidia.com", "nvidiadrivers.nvidia.com"]
    assert first["alm_examples"][0]["kind"] == "ClusterPolicy"
    csvs = {c["metadata"]["name"]: c["status"]["phase"]
            for c in custom(lab, OLM, "clusterserviceversions", "nvidia-gpu-operator")}
    assert csvs == {"gpu-operator-certified.v25.3.0": "Succeeded"}
    sub = custom(lab, OLM, "subscriptions", "nvidia-gpu-operator")[0]
    assert sub["spec"]["installPlanApproval"] == "Manual"
    assert sub["spec"]["startingCSV"] == "gpu-operator-certified.v25.3.0"

    # OLM proposes the channel head; a rerun neither changes nor approves it
    rc, again, out = run_module(lab, tmp_path, "olm_operator", GPU)
    assert rc == 0, out
    assert again["changed"] is False
    plans = _plans(lab, "nvidia-gpu-operator")
    assert plans == {"gpu-operator-certified.v25.3.0": True,
                     "gpu-operator-certified.v25.3.1": False}

    # ... until the upgrade is asked for
    rc, upgraded, out = run_module(lab, tmp_path, "olm_operator", {**GPU, "upgrade": True})
    assert rc == 0, out
    assert upgraded["changed"] and upgraded["csv"] == "gpu-operator-certified.v25.3.1"
    assert _plans(lab, "nvidia-gpu-operator")["gpu-operator-certified.v25.3.1"] is True


@pytest.mark.parametrize(("change", "message"), [
    ({"package": "no-such-operator"}, "package no-such-operator is not in any catalog"),
    ({"catalog": "redhat-operators"},
     "package gpu-operator-certified comes from catalog certified-operators, not redhat-operators"),
    ({"channel": "v99"}, "has no channel v99; channels: stable, v24.9, v25.3"),
    ({"starting_csv": "gpu-operator-certified.v24.9.1"},
     "CSV gpu-operator-certified.v24.9.1 is not in channel v25.3"),
])
def test_bad_input_fails_before_any_write(k8s_lab, tmp_path, change, message):
    rc, result, out = run_module(k8s_lab, tmp_path, "olm_operator",
                                 {**GPU, "namespace": "bad-input", **change})
    assert rc != 0, out
    assert message in result["msg"], result
    assert "bad-input" not in namespaces(k8s_lab)


def test_operator_group_conflict(k8s_lab, tmp_path):
    single = {**GPU, "namespace": "og-conflict", "install_mode": "SingleNamespace",
              "target_namespace": "default", "channel": "stable", "starting_csv": None,
              "wait_timeout": 120}
    rc, _first, out = run_module(k8s_lab, tmp_path, "olm_operator", single)
    assert rc == 0, out
    before = custom(k8s_lab, OLM, "subscriptions", "og-conflict")
    rc, result, out = run_module(k8s_lab, tmp_path, "olm_operator",
                                 {**GPU, "namespace": "og-conflict"})
    assert rc != 0, out
    assert "already has OperatorGroup og-conflict targeting ['default']" in result["msg"]
    assert custom(k8s_lab, OLM, "subscriptions", "og-conflict") == before


def test_failed_csv_is_reported_with_its_reason(k8s_lab_factory, tmp_path):
    lab = k8s_lab_factory()
    lab_post(lab, "/lab/olm/fail", {"csv": "kuberay-operator.v1.4.2",
                                    "message": "deployment kuberay-operator never ready"})
    rc, result, out = run_module(lab, tmp_path, "olm_operator",
                                 {"package": "kuberay-operator", "namespace": "ray-failing",
                                  "catalog": "community-operators", "wait_timeout": 60})
    assert rc != 0, out
    assert result["msg"].startswith("CSV kuberay-operator.v1.4.2 failed")
    assert "deployment kuberay-operator never ready" in result["msg"]


def test_transient_api_errors_are_retried(k8s_lab, tmp_path):
    for code in (429, 500, 503):
        lab_post(k8s_lab, "/lab/faults", {"verb": "*", "resource": "subscriptions.operators"
                                          ".coreos.com", "code": code, "count": 1})
    rc, result, out = run_module(k8s_lab, tmp_path, "olm_operator",
                                 {"package": "nfd", "namespace": "nfd-retried",
                                  "catalog": "redhat-operators", "wait_timeout": 120})
    assert rc == 0, out
    assert result["csv"].startswith("nfd.")
    assert [s["metadata"]["name"] for s in custom(k8s_lab, OLM, "subscriptions",
                                                  "nfd-retried")] == ["nfd"]


def test_a_plan_holding_another_csv_besides_the_target_is_never_approved(k8s_lab_factory,
                                                                         tmp_path):
    """OLM can resolve more than asked (a dependency, a bundled version): approving such a
    plan would install what nobody pinned, so the module refuses it and approves nothing."""
    lab = k8s_lab_factory()
    ns, head = "nvidia-gpu-operator", "gpu-operator-certified.v25.3.1"
    rc, _first, out = run_module(lab, tmp_path, "olm_operator", GPU)
    assert rc == 0, out
    # OLM proposes the channel head; a second actor's resolution adds another CSV to it
    plan = wait_for(lambda: next((p for p in custom(lab, OLM, "installplans", ns)
                                  if p["spec"]["clusterServiceVersionNames"] == [head]), None),
                    "the channel head's InstallPlan")
    extra = "nfd.4.18.0-202501010000"
    client.CustomObjectsApi(api(lab)).patch_namespaced_custom_object(
        "operators.coreos.com", "v1alpha1", ns, "installplans", plan["metadata"]["name"],
        {"spec": {"clusterServiceVersionNames": [head, extra]}})

    rc, res, out = run_module(lab, tmp_path, "olm_operator", {**GPU, "upgrade": True})
    assert rc != 0, out
    assert res["msg"].startswith(f"InstallPlan {ns}/{plan['metadata']['name']} installs {extra} "
                                 f"besides {head}"), res
    assert res["csvs"] == sorted([head, extra])
    # read back: the plan stays unapproved and the installed CSV is still the pinned one
    plans = {p["metadata"]["name"]: p["spec"]["approved"]
             for p in custom(lab, OLM, "installplans", ns)}
    assert plans[plan["metadata"]["name"]] is False
    csvs = {c["metadata"]["name"] for c in custom(lab, OLM, "clusterserviceversions", ns)}
    assert csvs == {"gpu-operator-certified.v25.3.0"}
