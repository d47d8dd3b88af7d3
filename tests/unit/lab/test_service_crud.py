"""CRUD, resourceVersion, selectors, finalizers, dry-run and Status errors of the service."""

from __future__ import annotations

import pytest
from gpu_lab.apiserver.errors import ApiError
from gpu_lab.apiserver.service import ApiService, Context


def _cm(name: str, labels: dict[str, str] | None = None, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels or {}}, "data": data}


def test_create_get_list_with_label_and_field_selectors(api: ApiService, ctx: Context) -> None:
    cms = api.rt("", "configmaps")
    api.create(cms, "default", _cm("a", {"app": "x", "tier": "web"}), ctx)
    api.create(cms, "default", _cm("b", {"app": "y"}), ctx)
    api.create(cms, "kube-system", _cm("c", {"app": "x"}), ctx)

    got = api.get(cms, "default", "a")
    assert got["metadata"]["uid"] and got["metadata"]["creationTimestamp"]
    assert got["metadata"]["namespace"] == "default"

    def names(**kw: str) -> list[str]:
        doc = api.list(cms, kw.pop("ns", None), kw.get("labels"), kw.get("fields"))
        return [i["metadata"]["name"] for i in doc["items"]]

    assert names(labels="app=x") == ["a", "c"]
    assert names(ns="default", labels="app=x") == ["a"]
    assert names(labels="app in (x,y),tier") == ["a"]
    assert names(labels="app!=x") == ["b"]
    assert names(labels="!tier") == ["b", "c"]
    assert names(fields="metadata.namespace=kube-system") == ["c"]
    assert names(fields="metadata.name!=a", labels="app=x") == ["c"]
    doc = api.list(cms, "default")
    assert doc["kind"] == "ConfigMapList" and "kind" not in doc["items"][0]


def test_unsupported_field_selector_is_rejected(api: ApiService) -> None:
    with pytest.raises(ApiError) as err:
        api.list(api.rt("", "configmaps"), None, None, "data.a=1")
    assert err.value.code == 400
    assert err.value.message == "field label not supported: data.a"


def test_pods_accept_their_field_labels(api: ApiService, ctx: Context) -> None:
    pods = api.rt("", "pods")
    api.create(pods, "default", {"metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "c", "image": "busybox:1"}]}}, ctx)
    doc = api.list(pods, None, None, "status.phase=Pending,spec.nodeName=")
    assert [p["metadata"]["name"] for p in doc["items"]] == ["p"]


def test_not_found_and_already_exists_messages(api: ApiService, ctx: Context) -> None:
    cms = api.rt("", "configmaps")
    with pytest.raises(ApiError) as err:
        api.get(cms, "default", "nope")
    assert (err.value.code, err.value.reason) == (404, "NotFound")
    assert err.value.message == 'configmaps "nope" not found'
    api.create(cms, "default", _cm("dup"), ctx)
    with pytest.raises(ApiError) as err:
        api.create(cms, "default", _cm("dup"), ctx)
    assert (err.value.code, err.value.reason) == (409, "AlreadyExists")
    assert err.value.message == 'configmaps "dup" already exists'
    with pytest.raises(ApiError) as err:
        api.get(api.rt("apps", "deployments"), "default", "nope")
    assert err.value.message == 'deployments.apps "nope" not found'


def test_create_in_missing_namespace_is_404(api: ApiService, ctx: Context) -> None:
    with pytest.raises(ApiError) as err:
        api.create(api.rt("", "configmaps"), "ghost", _cm("a"), ctx)
    assert err.value.code == 404
    assert err.value.message == 'namespaces "ghost" not found'


def test_generate_name_and_invalid_names(api: ApiService, ctx: Context) -> None:
    cms = api.rt("", "configmaps")
    made = api.create(cms, "default", {"metadata": {"generateName": "job-"}}, ctx)
    assert made["metadata"]["name"].startswith("job-") and len(made["metadata"]["name"]) == 9
    with pytest.raises(ApiError) as err:
        api.create(cms, "default", _cm("Bad_Name"), ctx)
    assert err.value.code == 422
    assert err.value.message.startswith(
        'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase '
        "RFC 1123 subdomain")
    assert err.value.details["causes"][0]["field"] == "metadata.name"


def test_stale_resource_version_conflicts(api: ApiService, ctx: Context) -> None:
    cms = api.rt("", "configmaps")
    first = api.create(cms, "default", _cm("a", x="1"), ctx)
    second = dict(first, data={"x": "2"})
    updated = api.update(cms, "default", "a", second, ctx)
    assert int(updated["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    stale = dict(first, data={"x": "3"})
    with pytest.raises(ApiError) as err:
        api.update(cms, "default", "a", stale, ctx)
    assert (err.value.code, err.value.reason) == (409, "Conflict")
    assert err.value.message == (
        'Operation cannot be fulfilled on configmaps "a": the object has been modified; please '
        "apply your changes to the latest version and try again")
    assert api.get(cms, "default", "a")["data"] == {"x": "2"}


def test_noop_update_keeps_resource_version(api: ApiService, ctx: Context) -> None:
    cms = api.rt("", "configmaps")
    first = api.create(cms, "default", _cm("a", x="1"), ctx)
    again = api.update(cms, "default", "a", first, ctx)
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


def test_generation_counts_spec_changes_only(api: ApiService, ctx: Context) -> None:
    deps = api.rt("apps", "deployments")
    body = {"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "d"}},
        "template": {"metadata": {"labels": {"app": "d"}},
                     "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}}
    made = api.create(deps, "default", body, ctx)
    assert made["metadata"]["generation"] == 1
    assert made["spec"]["replicas"] == 1  # defaulted
    labelled = api.patch(deps, "default", "d", "application/merge-patch+json",
                         {"metadata": {"labels": {"x": "y"}}}, ctx)
    assert labelled["metadata"]["generation"] == 1
    scaled = api.patch(deps, "default", "d", "application/merge-patch+json",
                       {"spec": {"replicas": 3}}, ctx)
    assert scaled["metadata"]["generation"] == 2


def test_status_subresource_splits_spec_and_status(api: ApiService, ctx: Context) -> None:
    deps = api.rt("apps", "deployments")
    api.create(deps, "default", {"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "d"}},
        "template": {"metadata": {"labels": {"app": "d"}},
                     "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}},
        "status": {"replicas": 7}}, ctx)
    assert "replicas" not in api.get(deps, "default", "d").get("status", {})
    api.patch(deps, "default", "d", "application/merge-patch+json",
              {"spec": {"replicas": 2}, "status": {"replicas": 5}}, ctx)
    got = api.get(deps, "default", "d")
    assert got["spec"]["replicas"] == 2 and "replicas" not in got.get("status", {})
    api.patch(deps, "default", "d", "application/merge-patch+json",
              {"spec": {"replicas": 9}, "status": {"replicas": 5}}, ctx, "status")
    got = api.get(deps, "default", "d")
    assert got["spec"]["replicas"] == 2 and got["status"]["replicas"] == 5


def test_dry_run_writes_nothing(api: ApiService) -> None:
    cms = api.rt("", "configmaps")
    rv = api.store.rv
    out = api.create(cms, "default", _cm("dry"), Context(field_manager="t", dry_run=True))
    assert out["metadata"]["name"] == "dry"
    assert api.store.rv == rv
    with pytest.raises(ApiError):
        api.get(cms, "default", "dry")


def test_finalizers_hold_deletion_until_removed(api: ApiService, ctx: Context) -> None:
    cms = api.rt("", "configmaps")
    api.create(cms, "default", {"metadata": {"name": "f", "finalizers": ["lab/x"]}}, ctx)
    pending = api.delete(cms, "default", "f", ctx)
    assert pending["metadata"]["deletionTimestamp"]
    assert api.get(cms, "default", "f")["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiError) as err:
        api.patch(cms, "default", "f", "application/merge-patch+json",
                  {"metadata": {"finalizers": ["lab/x", "lab/y"]}}, ctx)
    assert err.value.code == 422 and "no new finalizers" in err.value.message
    api.patch(cms, "default", "f", "application/merge-patch+json",
              {"metadata": {"finalizers": None}}, ctx)
    with pytest.raises(ApiError) as err:
        api.get(cms, "default", "f")
    assert err.value.code == 404


def test_namespace_deletion_sets_terminating(api: ApiService, ctx: Context) -> None:
    nss = api.rt("", "namespaces")
    api.create(nss, None, {"metadata": {"name": "gone"}}, ctx)
    out = api.delete(nss, None, "gone", ctx)
    assert out["status"]["phase"] == "Terminating"
    with pytest.raises(ApiError) as err:
        api.create(api.rt("", "configmaps"), "gone", _cm("late"), ctx)
    assert err.value.code == 403
    assert "because it is being terminated" in err.value.message


def test_delete_preconditions(api: ApiService, ctx: Context) -> None:
    cms = api.rt("", "configmaps")
    made = api.create(cms, "default", _cm("p"), ctx)
    with pytest.raises(ApiError) as err:
        api.delete(cms, "default", "p", ctx, {"preconditions": {"resourceVersion": "1"}})
    assert err.value.code == 409
    api.delete(cms, "default", "p", ctx,
               {"preconditions": {"uid": made["metadata"]["uid"]}})
    with pytest.raises(ApiError):
        api.get(cms, "default", "p")


def test_secret_string_data_becomes_data(api: ApiService, ctx: Context) -> None:
    made = api.create(api.rt("", "secrets"), "default",
                      {"metadata": {"name": "s"}, "stringData": {"token": "abc"}}, ctx)
    assert made["data"] == {"token": "YWJj"} and "stringData" not in made
    assert made["type"] == "Opaque"


def test_pagination_with_limit_and_continue(api: ApiService, ctx: Context) -> None:
    cms = api.rt("", "configmaps")
    for i in range(5):
        api.create(cms, "default", _cm(f"page-{i}"), ctx)
    first = api.list(cms, "default", limit=2)
    assert [i["metadata"]["name"] for i in first["items"]] == ["page-0", "page-1"]
    assert first["metadata"]["remainingItemCount"] == 3
    rest = api.list(cms, "default", limit=10, continue_token=first["metadata"]["continue"])
    assert [i["metadata"]["name"] for i in rest["items"]] == ["page-2", "page-3", "page-4"]
    assert "continue" not in rest["metadata"]


def test_pods_need_their_service_account_and_an_scc(api: ApiService, ctx: Context) -> None:
    pods = api.rt("", "pods")
    with pytest.raises(ApiError) as err:
        api.create(pods, "default", {"metadata": {"name": "p"}, "spec": {
            "serviceAccountName": "ghost", "containers": [{"name": "c", "image": "x:1"}]}}, ctx)
    assert err.value.code == 403
    assert err.value.message == ('pods "p" is forbidden: error looking up service account '
                                 'default/ghost: serviceaccount "ghost" not found')
    root = {"metadata": {"name": "root"}, "spec": {"containers": [
        {"name": "c", "image": "x:1", "securityContext": {"runAsUser": 0}}]}}
    with pytest.raises(ApiError) as err:
        api.create(pods, "default", root, ctx)
    assert err.value.code == 403
    assert err.value.message.startswith(
        'pods "root" is forbidden: unable to validate against any security context constraint: '
        '[provider "anyuid": Forbidden: not usable by user or serviceaccount')
    assert "spec.containers[0].securityContext.runAsUser: Invalid value: 0: must be in the " \
           "ranges" in err.value.message
    api.create(api.rt("rbac.authorization.k8s.io", "rolebindings"), "default", {
        "metadata": {"name": "anyuid"}, "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
            "name": "system:openshift:scc:anyuid"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]},
        ctx)
    admitted = api.create(pods, "default", root, ctx)
    assert admitted["metadata"]["annotations"]["openshift.io/scc"] == "anyuid"
    plain = api.create(pods, "kube-system", {"metadata": {"name": "plain"}, "spec": {
        "containers": [{"name": "c", "image": "x:1"}]}}, ctx)
    assert plain["metadata"]["annotations"]["openshift.io/scc"] == "restricted-v2"
    container = plain["spec"]["containers"][0]["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["runAsNonRoot"] is True


def test_create_with_a_resource_version_is_refused(api: ApiService, ctx: Context) -> None:
    body = _cm("rv")
    body["metadata"]["resourceVersion"] = "42"
    with pytest.raises(ApiError) as err:
        api.create(api.rt("", "configmaps"), "default", body, ctx)
    assert (err.value.code, err.value.message) == (
        400, "resourceVersion should not be set on objects to be created")


def test_priority_class_sets_the_pod_priority(api: ApiService, ctx: Context) -> None:
    pods = api.rt("", "pods")
    spec = {"priorityClassName": "llm-serving", "containers": [{"name": "c", "image": "x:1"}]}
    with pytest.raises(ApiError) as err:
        api.create(pods, "default", {"metadata": {"name": "p"}, "spec": spec}, ctx)
    assert err.value.message == ('pods "p" is forbidden: no PriorityClass with name llm-serving '
                                 "was found")
    api.create(api.rt("scheduling.k8s.io", "priorityclasses"), None,
               {"metadata": {"name": "llm-serving"}, "value": 1000}, ctx)
    made = api.create(pods, "default", {"metadata": {"name": "p"}, "spec": spec}, ctx)
    assert made["spec"]["priority"] == 1000
