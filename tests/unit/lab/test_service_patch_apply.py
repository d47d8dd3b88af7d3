"""Patches (JSON, merge, strategic) and server-side apply with managedFields."""

from __future__ import annotations

import pytest
from gpu_lab.apiserver.errors import ApiError
from gpu_lab.apiserver.patch import APPLY_PATCH, JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH
from gpu_lab.apiserver.service import ApiService, Context


def _deployment(name: str = "web", replicas: int | None = None, **container: object) -> dict:
    spec: dict = {
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
            {"name": "main", "image": "nginx:1.27", **container}]}},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": spec}


def _managers(obj: dict) -> dict[tuple[str, str], dict]:
    return {(m["manager"], m["operation"]): m["fieldsV1"]
            for m in obj["metadata"]["managedFields"]}


def test_strategic_merge_merges_containers_env_and_volumes_by_name(
        api: ApiService, ctx: Context) -> None:
    deps = api.rt("apps", "deployments")
    body = _deployment(env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    body["spec"]["template"]["spec"]["volumes"] = [{"name": "v1", "emptyDir": {}}]
    api.create(deps, "default", body, ctx)
    patch = {"spec": {"template": {"spec": {
        "containers": [{"name": "main", "env": [{"name": "B", "value": "20"},
                                                {"name": "C", "value": "3"}]},
                       {"name": "side", "image": "busybox:1"}],
        "volumes": [{"name": "v2", "emptyDir": {}}]}}}}
    out = api.patch(deps, "default", "web", STRATEGIC_PATCH, patch, ctx)
    pod = out["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["main", "side"]
    assert pod["containers"][0]["image"] == "nginx:1.27"
    assert pod["containers"][0]["env"] == [{"name": "A", "value": "1"},
                                           {"name": "B", "value": "20"},
                                           {"name": "C", "value": "3"}]
    assert [v["name"] for v in pod["volumes"]] == ["v1", "v2"]
    delete = {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "$patch": "delete"}]}}}}
    out = api.patch(deps, "default", "web", STRATEGIC_PATCH, delete, ctx)
    assert [c["name"] for c in out["spec"]["template"]["spec"]["containers"]] == ["main"]


def test_merge_patch_replaces_lists(api: ApiService, ctx: Context) -> None:
    deps = api.rt("apps", "deployments")
    api.create(deps, "default", _deployment(env=[{"name": "A", "value": "1"}]), ctx)
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "nginx:2", "env": [{"name": "Z", "value": "9"}]}]}}}}
    out = api.patch(deps, "default", "web", MERGE_PATCH, patch, ctx)
    assert out["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "Z", "value": "9"}]


def test_json_patch_and_failed_test_operation(api: ApiService, ctx: Context) -> None:
    cms = api.rt("", "configmaps")
    api.create(cms, "default", {"metadata": {"name": "j"}, "data": {"a": "1"}}, ctx)
    out = api.patch(cms, "default", "j", JSON_PATCH,
                    [{"op": "add", "path": "/data/b", "value": "2"},
                     {"op": "remove", "path": "/data/a"}], ctx)
    assert out["data"] == {"b": "2"}
    with pytest.raises(ApiError) as err:
        api.patch(cms, "default", "j", JSON_PATCH,
                  [{"op": "test", "path": "/data/b", "value": "nope"}], ctx)
    assert err.value.code == 422
    assert api.get(cms, "default", "j")["data"] == {"b": "2"}


def test_patch_carrying_a_stale_resource_version_conflicts(api: ApiService, ctx: Context) -> None:
    cms = api.rt("", "configmaps")
    api.create(cms, "default", {"metadata": {"name": "s"}, "data": {"a": "1"}}, ctx)
    with pytest.raises(ApiError) as err:
        api.patch(cms, "default", "s", MERGE_PATCH,
                  {"metadata": {"resourceVersion": "2"}, "data": {"a": "2"}}, ctx)
    assert err.value.code == 409


def test_apply_creates_and_is_idempotent(api: ApiService) -> None:
    deps = api.rt("apps", "deployments")
    ctx = Context(field_manager="llmops-gpu-stack")
    first = api.patch(deps, "default", "web", APPLY_PATCH, _deployment(replicas=2), ctx)
    assert first["spec"]["replicas"] == 2
    owned = _managers(first)[("llmops-gpu-stack", "Apply")]
    assert owned["f:spec"]["f:replicas"] == {}
    main = owned["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"main"}']
    assert main["."] == {} and "f:image" in main
    again = api.patch(deps, "default", "web", APPLY_PATCH, _deployment(replicas=2), ctx)
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert again == first


def test_apply_conflict_with_other_manager_and_force(api: ApiService) -> None:
    deps = api.rt("apps", "deployments")
    api.patch(deps, "default", "web", APPLY_PATCH, _deployment(replicas=2),
              Context(field_manager="llmops-gpu-stack"))
    api.patch(deps, "default", "web", MERGE_PATCH, {"spec": {"replicas": 5}},
              Context(field_manager="kubectl-edit"))
    with pytest.raises(ApiError) as err:
        api.patch(deps, "default", "web", APPLY_PATCH, _deployment(replicas=3),
                  Context(field_manager="llmops-gpu-stack"))
    assert (err.value.code, err.value.reason) == (409, "Conflict")
    assert err.value.message == (
        'Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: .spec.replicas')
    assert err.value.details["causes"] == [{"reason": "FieldManagerConflict",
                                            "message": 'conflict with "kubectl-edit" using apps/v1',
                                            "field": ".spec.replicas"}]
    assert api.get(deps, "default", "web")["spec"]["replicas"] == 5
    out = api.patch(deps, "default", "web", APPLY_PATCH, _deployment(replicas=3),
                    Context(field_manager="llmops-gpu-stack", force=True))
    assert out["spec"]["replicas"] == 3
    managers = _managers(out)
    assert "f:replicas" in managers[("llmops-gpu-stack", "Apply")]["f:spec"]
    assert ("kubectl-edit", "Update") not in managers  # its only field was taken


def test_apply_same_value_is_shared_not_a_conflict(api: ApiService) -> None:
    deps = api.rt("apps", "deployments")
    api.patch(deps, "default", "web", APPLY_PATCH, _deployment(replicas=2),
              Context(field_manager="a"))
    out = api.patch(deps, "default", "web", APPLY_PATCH, _deployment(replicas=2),
                    Context(field_manager="b"))
    managers = _managers(out)
    assert "f:replicas" in managers[("a", "Apply")]["f:spec"]
    assert "f:replicas" in managers[("b", "Apply")]["f:spec"]


def test_apply_removes_fields_the_manager_stopped_setting(api: ApiService) -> None:
    cms = api.rt("", "configmaps")
    ctx = Context(field_manager="llmops-gpu-stack")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c",
                                                                "labels": {"a": "1", "b": "2"}},
          "data": {"x": "1", "y": "2"}}
    api.patch(cms, "default", "c", APPLY_PATCH, cm, ctx)
    api.patch(cms, "default", "c", MERGE_PATCH, {"data": {"z": "3"}},
              Context(field_manager="other"))
    smaller = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "1"}}
    out = api.patch(cms, "default", "c", APPLY_PATCH, smaller, ctx)
    assert out["data"] == {"x": "1", "z": "3"}
    assert out["metadata"]["labels"] == {"a": "1"}


def test_apply_removes_whole_list_items_the_manager_stopped_setting(api: ApiService) -> None:
    """An env entry dropped from the apply configuration goes whole, as on a real API
    server (not left behind as an item without its key)."""
    deps = api.rt("apps", "deployments")
    ctx = Context(field_manager="llmops-gpu-stack")
    env = [{"name": "A", "value": "1"},
           {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
           {"name": "C", "value": "3"}]
    api.patch(deps, "default", "web", APPLY_PATCH, _deployment(env=env), ctx)
    out = api.patch(deps, "default", "web", APPLY_PATCH, _deployment(env=env[:1]), ctx)
    assert out["spec"]["template"]["spec"]["containers"][0]["env"] == env[:1]
    owned = _managers(out)[("llmops-gpu-stack", "Apply")]
    main = owned["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"main"}']
    assert list(main["f:env"]) == ['k:{"name":"A"}']


def test_apply_needs_field_manager_and_type(api: ApiService) -> None:
    cms = api.rt("", "configmaps")
    with pytest.raises(ApiError) as err:
        api.patch(cms, "default", "c", APPLY_PATCH, {"apiVersion": "v1", "kind": "ConfigMap"},
                  Context())
    assert err.value.code == 400 and "fieldManager is required" in err.value.message
    with pytest.raises(ApiError) as err:
        api.patch(cms, "default", "c", APPLY_PATCH, {"metadata": {"name": "c"}},
                  Context(field_manager="x"))
    assert err.value.code == 400


def test_update_takes_ownership_of_changed_fields(api: ApiService) -> None:
    cms = api.rt("", "configmaps")
    made = api.create(cms, "default", {"metadata": {"name": "o"}, "data": {"a": "1"}},
                      Context(field_manager="creator"))
    assert _managers(made)[("creator", "Update")] == {"f:data": {"f:a": {}}}
    changed = dict(made, data={"a": "1", "b": "2"})
    out = api.update(cms, "default", "o", changed, Context(field_manager="editor"))
    managers = _managers(out)
    assert managers[("creator", "Update")] == {"f:data": {"f:a": {}}}
    assert managers[("editor", "Update")] == {"f:data": {"f:b": {}}}


def test_strategic_merge_on_a_custom_resource_is_415(api: ApiService, ctx: Context) -> None:
    subs = api.rt("operators.coreos.com", "subscriptions")
    api.create(subs, "openshift-operators", {
        "apiVersion": "operators.coreos.com/v1alpha1", "kind": "Subscription",
        "metadata": {"name": "s"}, "spec": {"name": "nfd", "source": "redhat-operators",
                                            "sourceNamespace": "openshift-marketplace"}}, ctx)
    with pytest.raises(ApiError) as err:
        api.patch(subs, "openshift-operators", "s", STRATEGIC_PATCH, {"spec": {}}, ctx)
    assert err.value.code == 415
