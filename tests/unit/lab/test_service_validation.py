"""Schema validation, defaulting, pruning and strict field validation, CRD registration."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from gpu_lab.apiserver.errors import ApiError
from gpu_lab.apiserver.patch import APPLY_PATCH
from gpu_lab.apiserver.service import ApiService, Context

RegisterCrd = Callable[[str], None]


def _raycluster(replicas: object = 1, **extra: object) -> dict:
    container = {"name": "ray-worker", "image": "rayproject/ray:2.49.0"}
    return {
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "rc"},
        "spec": {
            "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [
                {"name": "ray-head", "image": "rayproject/ray:2.49.0"}]}}},
            "workerGroupSpecs": [{"groupName": "gpu", "replicas": replicas, "minReplicas": 0,
                                  "maxReplicas": 4, "rayStartParams": {},
                                  "template": {"spec": {"containers": [container]}}}],
            **extra,
        },
    }


def _route(termination: str) -> dict:
    return {"apiVersion": "route.openshift.io/v1", "kind": "Route", "metadata": {"name": "r"},
            "spec": {"to": {"kind": "Service", "name": "svc"},
                     "tls": {"termination": termination}}}


def test_raycluster_with_string_replicas_is_422_with_the_servers_message(
        api: ApiService, register_crd: RegisterCrd, ctx: Context) -> None:
    register_crd("rayclusters.ray.io")
    rcs = api.rt("ray.io", "rayclusters")
    with pytest.raises(ApiError) as err:
        api.create(rcs, "default", _raycluster("one"), ctx)
    assert (err.value.code, err.value.reason) == (422, "Invalid")
    assert err.value.message == (
        'RayCluster.ray.io "rc" is invalid: spec.workerGroupSpecs[0].replicas: Invalid value: '
        '"string": spec.workerGroupSpecs[0].replicas in body must be of type integer: "string"')
    assert err.value.details["causes"][0] == {
        "reason": "FieldValueTypeInvalid", "field": "spec.workerGroupSpecs[0].replicas",
        "message": 'Invalid value: "string": spec.workerGroupSpecs[0].replicas in body must be '
                   'of type integer: "string"'}


def test_raycluster_defaults_and_required_fields(
        api: ApiService, register_crd: RegisterCrd, ctx: Context) -> None:
    register_crd("rayclusters.ray.io")
    rcs = api.rt("ray.io", "rayclusters")
    body = _raycluster()
    del body["spec"]["workerGroupSpecs"][0]["minReplicas"]
    made = api.create(rcs, "default", body, ctx)
    group = made["spec"]["workerGroupSpecs"][0]
    assert group["minReplicas"] == 0 and group["numOfHosts"] == 1
    ports = made["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "ports" not in ports
    broken = _raycluster()
    del broken["spec"]["workerGroupSpecs"][0]["groupName"]
    broken["metadata"]["name"] = "rc2"
    with pytest.raises(ApiError) as err:
        api.create(rcs, "default", broken, ctx)
    assert err.value.message == (
        'RayCluster.ray.io "rc2" is invalid: spec.workerGroupSpecs[0].groupName: Required value')


def test_route_with_unknown_tls_termination_is_422(api: ApiService, ctx: Context) -> None:
    with pytest.raises(ApiError) as err:
        api.create(api.rt("route.openshift.io", "routes"), "default", _route("bogus"), ctx)
    assert err.value.code == 422
    assert err.value.message == (
        'Route.route.openshift.io "r" is invalid: spec.tls.termination: Unsupported value: '
        '"bogus": supported values: "edge", "reencrypt", "passthrough"')


def test_route_gets_a_host_and_int_or_string_target_port(api: ApiService, ctx: Context) -> None:
    body = _route("edge")
    body["spec"]["port"] = {"targetPort": 8000}
    made = api.create(api.rt("route.openshift.io", "routes"), "default", body, ctx)
    assert made["spec"]["host"] == "r-default.apps.ocp.gpu-lab.local"
    body["metadata"]["name"] = "r2"
    body["spec"]["port"] = {"targetPort": "http"}
    assert api.create(api.rt("route.openshift.io", "routes"), "default", body, ctx)


def test_strict_rejects_unknown_fields_warn_prunes_them(
        api: ApiService, register_crd: RegisterCrd) -> None:
    register_crd("rayclusters.ray.io")
    rcs = api.rt("ray.io", "rayclusters")
    body = _raycluster(rayVersionn="2.49.0")
    with pytest.raises(ApiError) as err:
        api.create(rcs, "default", body, Context(field_manager="t", field_validation="Strict"))
    assert (err.value.code, err.value.reason) == (400, "BadRequest")
    assert err.value.message == 'strict decoding error: unknown field "spec.rayVersionn"'
    warn = Context(field_manager="t")
    made = api.create(rcs, "default", body, warn)
    assert "rayVersionn" not in made["spec"]
    assert warn.warnings == ['unknown field "spec.rayVersionn"']


def test_strict_applies_to_builtins_and_apply(api: ApiService) -> None:
    deps = api.rt("apps", "deployments")
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replica": 2, "selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [
                         {"name": "c", "image": "x:1", "imagePullPolicyy": "Always"}]}}}}
    strict = Context(field_manager="t", field_validation="Strict")
    with pytest.raises(ApiError) as err:
        api.patch(deps, "default", "d", APPLY_PATCH, body, strict)
    assert err.value.message == (
        'strict decoding error: unknown field "spec.replica", unknown field '
        '"spec.template.spec.containers[0].imagePullPolicyy"')


def test_builtin_type_errors_are_decode_errors(api: ApiService, ctx: Context) -> None:
    body = {"metadata": {"name": "d"}, "spec": {
        "replicas": "two", "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}},
                     "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}}
    with pytest.raises(ApiError) as err:
        api.create(api.rt("apps", "deployments"), "default", body, ctx)
    assert err.value.code == 400
    assert err.value.message.startswith('Deployment in version "v1" cannot be handled as a '
                                        "Deployment: json: cannot unmarshal string")


def test_apply_with_null_object_is_refused(api: ApiService, register_crd: RegisterCrd) -> None:
    register_crd("clusterpolicies.nvidia.com")
    policies = api.rt("nvidia.com", "clusterpolicies")
    body = {"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy",
            "metadata": {"name": "gpu-cluster-policy"},
            "spec": {"validator": {"plugin": None}}}
    with pytest.raises(ApiError) as err:
        api.patch(policies, None, "gpu-cluster-policy", APPLY_PATCH, body,
                  Context(field_manager="t"))
    assert err.value.code == 422
    assert err.value.message == (
        'ClusterPolicy.nvidia.com "gpu-cluster-policy" is invalid: spec.validator.plugin: Invalid '
        'value: "null": spec.validator.plugin in body must be of type object: "null"')


def test_crd_registration_serves_the_kind_and_deletion_removes_instances(
        api: ApiService, register_crd: RegisterCrd, ctx: Context) -> None:
    crds = api.rt("apiextensions.k8s.io", "customresourcedefinitions")
    assert api.registry.lookup("ray.io", "v1", "rayclusters") is None
    register_crd("rayclusters.ray.io")
    crd = api.get(crds, None, "rayclusters.ray.io")
    established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
    assert established[0]["status"] == "True"
    assert api.registry.lookup("ray.io", "v1", "rayclusters") is not None
    api.create(api.rt("ray.io", "rayclusters"), "default", _raycluster(), ctx)
    api.delete(crds, None, "rayclusters.ray.io", ctx)
    assert api.registry.lookup("ray.io", "v1", "rayclusters") is None
    assert api.store.list(("ray.io", "rayclusters")) == []


def test_crd_scope_is_immutable(api: ApiService, register_crd: RegisterCrd, ctx: Context) -> None:
    register_crd("rayclusters.ray.io")
    crds = api.rt("apiextensions.k8s.io", "customresourcedefinitions")
    with pytest.raises(ApiError) as err:
        api.patch(crds, None, "rayclusters.ray.io", "application/merge-patch+json",
                  {"spec": {"scope": "Cluster"}}, ctx)
    assert 'spec.scope: Invalid value: "Cluster": field is immutable' in err.value.message


def test_job_restart_policy_and_pod_immutability(api: ApiService, ctx: Context) -> None:
    job = {"metadata": {"name": "j"}, "spec": {"template": {"spec": {
        "containers": [{"name": "c", "image": "x:1"}]}}}}
    with pytest.raises(ApiError) as err:
        api.create(api.rt("batch", "jobs"), "default", job, ctx)
    assert 'Unsupported value: "Always": supported values: "OnFailure", "Never"' in (
        err.value.message)
    pods = api.rt("", "pods")
    api.create(pods, "default", {"metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "c", "image": "x:1"}]}}, ctx)
    api.patch(pods, "default", "p", "application/strategic-merge-patch+json",
              {"spec": {"containers": [{"name": "c", "image": "x:2"}]}}, ctx)
    with pytest.raises(ApiError) as err:
        api.patch(pods, "default", "p", "application/merge-patch+json",
                  {"spec": {"restartPolicy": "Never"}}, ctx)
    assert "pod updates may not change fields" in err.value.message


def test_pod_defaults_requests_from_limits(api: ApiService, ctx: Context) -> None:
    made = api.create(api.rt("", "pods"), "default", {"metadata": {"name": "g"}, "spec": {
        "containers": [{"name": "c", "image": "x:1",
                        "resources": {"limits": {"nvidia.com/gpu": 2}}}]}}, ctx)
    container = made["spec"]["containers"][0]
    assert container["resources"]["requests"] == {"nvidia.com/gpu": "2"}  # served as strings
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert made["spec"]["serviceAccountName"] == "default"
    assert made["status"]["phase"] == "Pending"


def test_cel_rules_of_the_route_crd(api: ApiService, ctx: Context) -> None:
    body = _route("passthrough")
    body["spec"]["tls"]["insecureEdgeTerminationPolicy"] = "Allow"
    with pytest.raises(ApiError) as err:
        api.create(api.rt("route.openshift.io", "routes"), "default", body, ctx)
    assert err.value.code == 422
    assert err.value.message == (
        'Route.route.openshift.io "r" is invalid: spec.tls: Invalid value: "object": cannot '
        "have both spec.tls.termination: passthrough and spec.tls.insecureEdgeTerminationPolicy: "
        "Allow")
    body["spec"]["tls"]["insecureEdgeTerminationPolicy"] = "Redirect"
    assert api.create(api.rt("route.openshift.io", "routes"), "default", body, ctx)


def test_cel_transition_rule_makes_managed_by_immutable(
        api: ApiService, register_crd: RegisterCrd, ctx: Context) -> None:
    register_crd("rayclusters.ray.io")
    rcs = api.rt("ray.io", "rayclusters")
    api.create(rcs, "default", _raycluster(managedBy="ray.io/kuberay-operator"), ctx)
    with pytest.raises(ApiError) as err:
        api.patch(rcs, "default", "rc", "application/merge-patch+json",
                  {"spec": {"managedBy": "kueue.x-k8s.io/multikueue"}}, ctx)
    assert err.value.code == 422
    assert "spec.managedBy: Invalid value: \"string\": " in err.value.message
    with pytest.raises(ApiError) as err:
        api.create(rcs, "default", dict(_raycluster(managedBy="someone/else"),
                                        metadata={"name": "rc2"}), ctx)
    assert "spec.managedBy" in err.value.message


def test_annotations_are_limited_to_256k(api: ApiService, ctx: Context) -> None:
    body = {"metadata": {"name": "big", "annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": "x" * 262200}}}
    with pytest.raises(ApiError) as err:
        api.create(api.rt("", "configmaps"), "default", body, ctx)
    assert err.value.message == ('ConfigMap "big" is invalid: metadata.annotations: Too long: '
                                 "may not be more than 262144 bytes")
