"""The lab API server over HTTPS with the plain ``kubernetes`` client (typed and dynamic)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import requests
from gpu_lab.apiserver.server import LabServer
from gpu_lab.fixtures.k8s import api_client, dynamic_client
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.lab


@pytest.fixture
def admin(k8s_protocol_server: LabServer) -> Any:
    c = api_client(k8s_protocol_server)
    yield c
    c.close()


@pytest.fixture(name="dyn")
def _dyn(k8s_protocol_server: LabServer, admin: Any) -> Any:
    return dynamic_client(k8s_protocol_server, admin)


@pytest.fixture
def ns(admin: Any, request: pytest.FixtureRequest) -> str:
    name = "p-" + request.node.name.replace("_", "-")[5:40].strip("-")
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": name}})
    return name


def _status(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def test_wrong_token_gets_401_status(k8s_protocol_server: LabServer) -> None:
    cfg = client.Configuration()
    cfg.host = k8s_protocol_server.url
    cfg.ssl_ca_cert = str(k8s_protocol_server.settings.k8s_dir / "ca.crt")
    cfg.api_key = {"authorization": "Bearer sha256~wrong"}
    with client.ApiClient(cfg) as bad, pytest.raises(ApiException) as err:
        client.CoreV1Api(bad).list_namespace()
    assert err.value.status == 401
    assert _status(err.value) == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                  "status": "Failure", "message": "Unauthorized",
                                  "reason": "Unauthorized", "code": 401}


def test_reader_may_read_but_not_write(k8s_protocol_server: LabServer) -> None:
    reader = api_client(k8s_protocol_server, "lab-reader")
    core = client.CoreV1Api(reader)
    assert any(n.metadata.name == "default" for n in core.list_namespace().items)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    assert err.value.status == 403 and _status(err.value)["reason"] == "Forbidden"
    reader.close()


def test_version_and_cluster_version(admin: Any, dyn: Any) -> None:
    assert client.VersionApi(admin).get_code().git_version == "v1.32.5"
    cv = dyn.resources.get(api_version="config.openshift.io/v1", kind="ClusterVersion")
    assert cv.get(name="version").status.desired.version == "4.19.10"


def test_typed_round_trip_with_strategic_patch(admin: Any, ns: str) -> None:
    apps = client.AppsV1Api(admin)
    body = {"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "main", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]}]}}}}
    made = apps.create_namespaced_deployment(ns, body)
    assert made.spec.replicas == 1 and made.metadata.generation == 1
    patched = apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {
        "containers": [{"name": "main", "env": [{"name": "B", "value": "2"}]}]}}}})
    env = [(e.name, e.value) for e in patched.spec.template.spec.containers[0].env]
    assert env == [("A", "1"), ("B", "2")]
    listed = apps.list_namespaced_deployment(ns, label_selector="app=web")
    assert [d.metadata.name for d in listed.items] == ["web"]
    apps.delete_namespaced_deployment("web", ns)
    with pytest.raises(ApiException) as err:
        apps.read_namespaced_deployment("web", ns)
    assert err.value.status == 404


def test_stale_update_is_409(admin: Any, ns: str) -> None:
    core = client.CoreV1Api(admin)
    first = core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"a": "1"}})
    first.data = {"a": "2"}
    core.replace_namespaced_config_map("c", ns, first)
    first.data = {"a": "3"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("c", ns, first)
    assert err.value.status == 409 and _status(err.value)["reason"] == "Conflict"
    assert core.read_namespaced_config_map("c", ns).data == {"a": "2"}


def test_server_side_apply_conflict_and_force(admin: Any, dyn: Any, ns: str) -> None:
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "namespace": ns},
            "data": {"mode": "a"}}
    cms.server_side_apply(body, field_manager="llmops-gpu-stack")
    cms.patch(body={"data": {"mode": "b"}}, name="ssa", namespace=ns,
              content_type="application/merge-patch+json", field_manager="someone-else")
    body["data"]["mode"] = "c"
    with pytest.raises(ApiException) as err:
        cms.server_side_apply(body, field_manager="llmops-gpu-stack")
    assert err.value.status == 409
    assert _status(err.value)["message"] == (
        'Apply failed with 1 conflict: conflict with "someone-else" using v1: .data.mode')
    forced = cms.server_side_apply(body, field_manager="llmops-gpu-stack", force_conflicts=True)
    assert forced.data.mode == "c"


def test_invalid_custom_resources_are_422(admin: Any, dyn: Any, ns: str) -> None:
    routes = dyn.resources.get(api_version="route.openshift.io/v1", kind="Route")
    route = {"apiVersion": "route.openshift.io/v1", "kind": "Route",
             "metadata": {"name": "r", "namespace": ns},
             "spec": {"to": {"kind": "Service", "name": "s"}, "tls": {"termination": "bogus"}}}
    with pytest.raises(ApiException) as err:
        routes.create(body=route, namespace=ns)
    assert err.value.status == 422
    assert _status(err.value)["message"].endswith(
        'spec.tls.termination: Unsupported value: "bogus": supported values: "edge", '
        '"reencrypt", "passthrough"')


def test_strict_field_validation_and_dry_run(admin: Any, dyn: Any, ns: str) -> None:
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"},
            "data": {"a": "1"}, "dataa": {"b": "2"}}
    with pytest.raises(ApiException) as err:
        cms.create(body=body, namespace=ns, query_params=[("fieldValidation", "Strict")])
    assert err.value.status == 400
    assert _status(err.value)["message"] == 'strict decoding error: unknown field "dataa"'
    made = cms.create(body=body, namespace=ns)  # default (Warn): pruned, with a warning
    assert "dataa" not in made.to_dict()
    core = client.CoreV1Api(admin)
    dry = core.create_namespaced_config_map(ns, {"metadata": {"name": "dry"}}, dry_run="All")
    assert dry.metadata.name == "dry"
    assert core.list_namespaced_config_map(ns, field_selector="metadata.name=dry").items == []


def test_crd_registered_at_run_time_is_discovered(
        admin: Any, dyn: Any, k8s_protocol_server: LabServer, ns: str) -> None:
    crd = k8s_protocol_server.crd_library.get("rayclusters.ray.io")
    ext = client.ApiextensionsV1Api(admin)
    if not any(c.metadata.name == "rayclusters.ray.io"
               for c in ext.list_custom_resource_definition().items):
        ext.create_custom_resource_definition(crd)
    rcs = dyn.resources.get(api_version="ray.io/v1", kind="RayCluster")
    bad = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "rc"},
           "spec": {"headGroupSpec": {"template": {"spec": {"containers": [
               {"name": "h", "image": "ray:1"}]}}},
               "workerGroupSpecs": [{"groupName": "g", "replicas": "one", "maxReplicas": 2,
                                     "minReplicas": 0, "template": {"spec": {"containers": [
                                         {"name": "w", "image": "ray:1"}]}}}]}}
    with pytest.raises(ApiException) as err:
        rcs.create(body=bad, namespace=ns)
    assert err.value.status == 422
    assert "spec.workerGroupSpecs[0].replicas in body must be of type integer" in (
        _status(err.value)["message"])


def test_watch_streams_events_and_resumes(admin: Any, ns: str) -> None:
    core = client.CoreV1Api(admin)
    seen: list[tuple[str, str]] = []
    w = watch.Watch()
    done = threading.Event()
    # from this resourceVersion on: the watch sees the events below however late it starts
    start = core.list_namespaced_config_map(ns).metadata.resource_version

    def consume() -> None:
        for event in w.stream(core.list_namespaced_config_map, ns, resource_version=start,
                              timeout_seconds=10):
            seen.append((event["type"], event["object"].metadata.name))
            if len(seen) == 3:
                w.stop()
        done.set()

    thread = threading.Thread(target=consume)
    thread.start()
    core.create_namespaced_config_map(ns, {"metadata": {"name": "w1"}})
    core.patch_namespaced_config_map("w1", ns, {"data": {"a": "1"}})
    core.delete_namespaced_config_map("w1", ns)
    assert done.wait(15)
    thread.join()
    assert seen == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "w2"}})
    resumed = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=1)]
    assert resumed == [("ADDED", "w2")]


def test_fault_injection_endpoint(admin: Any, k8s_protocol_server: LabServer, ns: str) -> None:
    url = f"{k8s_protocol_server.url}/lab/faults"
    ca = str(k8s_protocol_server.settings.k8s_dir / "ca.crt")
    headers = {"Authorization": f"Bearer {k8s_protocol_server.admin_token}"}
    rule = {"verb": "create", "resource": "configmaps", "namespace": ns, "code": 429,
            "count": 1, "retryAfter": 2}
    assert requests.post(url, json=rule, headers=headers, verify=ca, timeout=10).ok
    reader = {"Authorization": f"Bearer {k8s_protocol_server.reader_token}"}
    assert requests.post(url, json=rule, headers=reader, verify=ca, timeout=10).status_code == 403
    core = client.CoreV1Api(admin)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "f"}})
    assert err.value.status == 429 and err.value.headers["Retry-After"] == "2"
    assert core.create_namespaced_config_map(ns, {"metadata": {"name": "f"}}).metadata.uid
    left = requests.get(url, headers=headers, verify=ca, timeout=10).json()
    assert left == {"faults": []}


def test_scale_subresource(admin: Any, ns: str) -> None:
    apps = client.AppsV1Api(admin)
    apps.create_namespaced_deployment(ns, {"metadata": {"name": "s"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "s"}},
        "template": {"metadata": {"labels": {"app": "s"}},
                     "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}})
    scale = apps.read_namespaced_deployment_scale("s", ns)
    assert scale.spec.replicas == 1 and scale.status.selector == "app=s"
    apps.patch_namespaced_deployment_scale("s", ns, {"spec": {"replicas": 4}})
    assert apps.read_namespaced_deployment("s", ns).spec.replicas == 4


def test_self_subject_reviews(admin: Any, k8s_protocol_server: LabServer) -> None:
    review = {"spec": {"resourceAttributes": {"verb": "create", "group": "operators.coreos.com",
                                              "resource": "subscriptions"}}}
    auth = client.AuthorizationV1Api(admin)
    assert auth.create_self_subject_access_review(review).status.allowed is True
    reader = api_client(k8s_protocol_server, "lab-reader")
    denied = client.AuthorizationV1Api(reader).create_self_subject_access_review(review)
    assert denied.status.allowed is False
    review["spec"]["resourceAttributes"]["verb"] = "list"
    assert client.AuthorizationV1Api(reader).create_self_subject_access_review(
        review).status.allowed is True
    whoami = client.AuthenticationV1Api(reader).create_self_subject_review({})
    assert whoami.status.user_info.username == "lab-reader"
    reader.close()


def test_exec_needs_a_runtime_and_write_access(k8s_protocol_server: LabServer, ns: str) -> None:
    url = f"{k8s_protocol_server.url}/api/v1/namespaces/{ns}/pods/none/exec?command=ls"
    ca = str(k8s_protocol_server.settings.k8s_dir / "ca.crt")
    reader = {"Authorization": f"Bearer {k8s_protocol_server.reader_token}"}
    assert requests.get(url, headers=reader, verify=ca, timeout=10).status_code == 403
    admin = {"Authorization": f"Bearer {k8s_protocol_server.admin_token}"}
    missing = requests.get(url, headers=admin, verify=ca, timeout=10)
    assert missing.status_code == 404 and missing.json()["message"] == 'pods "none" not found'
