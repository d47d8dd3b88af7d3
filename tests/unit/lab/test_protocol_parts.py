"""Small protocol pieces: selectors, field sets, strategic directives, watch filtering,
fault rules, authorization messages, discovery documents."""

from __future__ import annotations

import pytest
from gpu_lab.apiserver import discovery
from gpu_lab.apiserver.auth import ADMIN, READER, Authenticator, authorize
from gpu_lab.apiserver.errors import ApiError
from gpu_lab.apiserver.faults import Faults
from gpu_lab.apiserver.fieldset import from_tree, object_fields, to_tree
from gpu_lab.apiserver.managed import path_string
from gpu_lab.apiserver.patch import strategic_merge
from gpu_lab.apiserver.schema import Schema
from gpu_lab.apiserver.selectors import label_selector, match_expressions
from gpu_lab.apiserver.service import ApiService
from gpu_lab.apiserver.store import Event
from gpu_lab.apiserver.watch import _translate


def _obj(**labels: str) -> dict:
    return {"metadata": {"name": "x", "labels": labels}}


@pytest.mark.parametrize(("selector", "expected"), [
    ("a=1", True), ("a==1", True), ("a!=1", False), ("a in (1, 2)", True),
    ("a notin (1)", False), ("b", True), ("!b", False), ("!c", True), ("a=1,b=2", True),
    ("a=1,b=3", False), ("", True),
])
def test_label_selector(selector: str, expected: bool) -> None:
    assert label_selector(selector)(_obj(a="1", b="2")) is expected


def test_bad_label_selector_is_400() -> None:
    with pytest.raises(ApiError) as err:
        label_selector("a in 1)")
    assert err.value.code == 400


def test_match_expressions() -> None:
    selector = {"matchLabels": {"app": "ray"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["gpu"]}]}
    assert match_expressions(selector, {"app": "ray", "tier": "gpu"})
    assert not match_expressions(selector, {"app": "ray", "tier": "cpu"})


def test_field_set_round_trip_and_path_strings(api: ApiService) -> None:
    schema = api.rt("apps", "deployments").schema
    obj = {"metadata": {"name": "d", "labels": {"a": "1"}, "finalizers": ["x"]},
           "spec": {"replicas": 1, "template": {"spec": {"containers": [
               {"name": "c", "image": "i", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "args": ["--a"]}]}}}}
    paths = object_fields(obj, schema, "main")
    tree = to_tree(paths)
    assert from_tree(tree) == paths
    container = tree["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"c"}']
    assert container["."] == {} and container["f:args"] == {}
    assert 'k:{"containerPort":80,"protocol":"TCP"}' in container["f:ports"]
    assert tree["f:metadata"]["f:finalizers"] == {'v:"x"': {}}
    assert path_string(("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"c"}',
                        "f:image")) == '.spec.template.spec.containers[name="c"].image'


def test_strategic_directives(api: ApiService) -> None:
    schema = api.rt("apps", "deployments").schema
    original = {"metadata": {"finalizers": ["a", "b"]}, "spec": {
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
        "template": {"spec": {"containers": [{"name": "c", "args": ["x"]}]}}}}
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"]},
             "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                      "template": {"spec": {"containers": [
                          {"name": "c", "args": ["y"]}]}}}}
    out = strategic_merge(original, patch, schema)
    assert out["metadata"]["finalizers"] == ["b", "c"]
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    assert out["spec"]["template"]["spec"]["containers"] == [{"name": "c", "args": ["y"]}]
    replaced = strategic_merge(original, {"spec": {"template": {"spec": {"containers": [
        {"$patch": "replace"}, {"name": "d"}]}}}}, schema)
    assert replaced["spec"]["template"]["spec"]["containers"] == [{"name": "d"}]


def test_schema_list_types_from_builtin_annotations(api: ApiService) -> None:
    pod = api.rt("", "pods").schema
    containers = pod.child("spec").child("containers")
    assert (containers.list_type, containers.map_keys) == ("map", ["name"])
    assert containers.items.child("args").list_type == "atomic"
    assert pod.child("metadata").child("finalizers").list_type == "set"
    assert Schema.any().child("anything") is not None


def test_watch_translation_follows_selectors() -> None:
    selected = label_selector("app=x")
    inside, outside = _obj(app="x"), _obj(app="y")
    key = ("", "configmaps")
    assert _translate(Event(2, "MODIFIED", key, inside, outside), selected) == "ADDED"
    assert _translate(Event(2, "MODIFIED", key, outside, inside), selected) == "DELETED"
    assert _translate(Event(2, "MODIFIED", key, inside, inside), selected) == "MODIFIED"
    assert _translate(Event(2, "MODIFIED", key, outside, outside), selected) is None
    assert _translate(Event(2, "ADDED", key, outside), selected) is None


def test_fault_rules_count_down_and_match() -> None:
    faults = Faults()
    faults.add({"verb": "patch", "resource": "deployments.apps", "code": 429, "count": 2,
                "retryAfter": 3})
    assert faults.check("get", "deployments", "apps", "ns", "d") is None
    first = faults.check("patch", "deployments", "apps", "ns", "d")
    assert first is not None and first.code == 429 and first.headers == {"Retry-After": "3"}
    assert faults.check("patch", "deployments", "apps", "ns", "d").code == 429
    assert faults.check("patch", "deployments", "apps", "ns", "d") is None
    faults.add({"resource": "pods", "code": 409, "name": "p"})
    assert faults.check("update", "pods", "", "ns", "q") is None
    assert faults.check("update", "pods", "", "ns", "p").reason == "Conflict"
    with pytest.raises(ApiError):
        faults.add({"code": 418})


def test_authentication_and_authorization() -> None:
    auth = Authenticator("admin-token", "reader-token")
    assert auth.authenticate("Bearer admin-token") is ADMIN
    assert auth.authenticate("Bearer reader-token") is READER
    with pytest.raises(ApiError) as err:
        auth.authenticate("Bearer nope")
    assert (err.value.code, err.value.reason, err.value.message) == (
        401, "Unauthorized", "Unauthorized")
    authorize(READER, "list", "pods", "", "default", None)
    with pytest.raises(ApiError) as err:
        authorize(READER, "create", "deployments", "apps", "default", None)
    assert err.value.code == 403
    assert err.value.message == (
        'deployments.apps is forbidden: User "lab-reader" cannot create resource "deployments" '
        'in API group "apps" in the namespace "default"')


def test_discovery_lists_subresources(api: ApiService) -> None:
    core = discovery.resource_list(api.registry, "", "v1")
    names = {r["name"]: r for r in core["resources"]}
    assert names["pods"]["kind"] == "Pod" and names["pods"]["namespaced"]
    assert names["pods/status"]["verbs"] == ["get", "patch", "update"]
    assert "pods/exec" in names and names["nodes"]["namespaced"] is False
    groups = {g["name"] for g in discovery.group_list(api.registry)["groups"]}
    assert {"apps", "route.openshift.io", "operators.coreos.com",
            "config.openshift.io"} <= groups
    olm = discovery.group(api.registry, "operators.coreos.com")
    versions = [v["version"] for v in olm["versions"]]
    assert versions[0] == olm["preferredVersion"]["version"] == "v2"
    assert versions.index("v1") < versions.index("v1alpha2") < versions.index("v1alpha1")
