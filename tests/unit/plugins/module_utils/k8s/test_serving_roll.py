"""A new API key or a new image rolls the serving pods (serving_roll through
serving_runner.run), against the in-memory cluster with a KubeRay stand-in that, like
KubeRay, makes missing pods from the RayCluster's templates (annotations, containers and
their images included) and never replaces running ones. A pod whose image contains
``invalid`` is stuck in ImagePullBackOff, as a kubelet would leave it.

What rolled is read from the fake cluster (pod uids, annotations, the record of writes),
not from the runner's result alone."""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import WaitTimeout
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import serving_roll
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving_runner import (
    Request,
    run,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.render import (
    API_KEY_SHA256_ANNOTATION,
)

from .fake_client import FakeClient
from .test_serving_runner import NS, PLAN, _node, _router

KEY_A, KEY_B = "key-a-" + "a" * 30, "key-b-" + "b" * 30
_UIDS = itertools.count(1)


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _make_pod(cluster: dict, node_type: str, template: dict, index: int,
              group: str = "headgroup") -> dict:
    meta = cluster["metadata"]
    uid = f"uid-{next(_UIDS)}"
    suffix = "head" if node_type == "head" else f"worker-{index}"
    containers = [{"name": c["name"], "image": c["image"]} for c in template["spec"]["containers"]]
    stuck = [c for c in containers if "invalid" in c["image"]]
    status = {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}],
              "containerStatuses": [{"name": c["name"], "ready": False, "state": {"waiting": {
                  "reason": "ImagePullBackOff", "message": f"Back-off pulling {c['image']}"}}}
                  for c in stuck]} if stuck else {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{meta['name']}-{suffix}-{uid}", "namespace": NS, "uid": uid,
                         "labels": {**meta["labels"], "ray.io/cluster": meta["name"],
                                    "ray.io/node-type": node_type, "ray.io/group": group},
                         "annotations": dict((template.get("metadata") or {}).get(
                             "annotations") or {})},
            "spec": {"nodeName": f"node-{index % 2}", "containers": containers},
            "status": status}


def _kuberay(fake: FakeClient) -> None:
    """Every RayCluster gets its missing head and workers, from its current templates."""
    for cluster in fake.clusters():
        name = cluster["metadata"]["name"]
        pods = [fake.render(k) for k in fake.objects if k[0] == "Pod"]
        mine = [p for p in pods if p["metadata"]["labels"].get("ray.io/cluster") == name]
        spec = cluster["spec"]
        if not [p for p in mine if p["metadata"]["labels"]["ray.io/node-type"] == "head"]:
            fake.put(_make_pod(cluster, "head", spec["headGroupSpec"]["template"], 0))
        group = spec["workerGroupSpecs"][0]
        workers = [p for p in mine if p["metadata"]["labels"]["ray.io/node-type"] == "worker"]
        for i in range(len(workers), group["replicas"]):
            fake.put(_make_pod(cluster, "worker", group["template"], i, group["groupName"]))


class _Cluster(FakeClient):
    def clusters(self) -> list[dict]:
        return [self.render(k) for k in list(self.objects) if k[0] == "RayCluster"]


def _cluster() -> _Cluster:
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": "models", "namespace": NS},
           "spec": {"accessModes": ["ReadWriteMany"]}}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    nodes = [_node(f"node-{i}", 4) for i in range(2)]
    fake = _Cluster([ns, pvc, *nodes], on_apply={"Route": _router})
    fake.controllers.append(_kuberay)
    return fake


def _request(key: str, plan: dict | None = None, **change) -> Request:
    args = {"namespace": NS, "plan": copy.deepcopy(plan or PLAN),
            "image": "registry.example.com/llmops/ray-vllm:0.1.0",
            "served_model_name": "tiny-llama",
            "model_dir": "tiny-llama", "wait_timeout": 60, "llm_api_key": key}
    args.update(change)
    return Request(**args)


def _pods(fake: FakeClient, cluster: str = "llm-0") -> dict:
    """uid -> the digest annotation, of the cluster's pods as the fake cluster holds them."""
    return {p["metadata"]["uid"]: (p["metadata"].get("annotations") or {}).get(
        API_KEY_SHA256_ANNOTATION)
        for p in (fake.render(k) for k in fake.objects if k[0] == "Pod")
        if p["metadata"]["labels"]["ray.io/cluster"] == cluster}


def _head_sha(fake: FakeClient, cluster: str = "llm-0") -> str | None:
    heads = [p for p in (fake.render(k) for k in fake.objects if k[0] == "Pod")
             if p["metadata"]["labels"]["ray.io/cluster"] == cluster
             and p["metadata"]["labels"]["ray.io/node-type"] == "head"]
    assert len(heads) == 1
    return heads[0]["metadata"]["annotations"].get(API_KEY_SHA256_ANNOTATION)


def _deleted_pods(fake: FakeClient) -> list[str]:
    return [name for verb, kind, name in fake.writes if verb == "delete" and kind == "Pod"]


def test_a_new_key_rolls_every_pod_and_the_diff_shows_only_digests():
    fake = _cluster()
    first = run(fake, _request(KEY_A))
    assert first["changed"] is True and first["rolled"] == []  # new pods, nothing to roll
    before = _pods(fake)
    assert len(before) == 3 and _head_sha(fake) == _sha(KEY_A)
    assert _deleted_pods(fake) == []

    result = run(fake, _request(KEY_B, diff=True))
    assert result["changed"] is True and result["rolled"] == ["llm-0"]
    after = _pods(fake)
    assert len(after) == 3 and not set(after) & set(before)  # head and both workers replaced
    assert _head_sha(fake) == _sha(KEY_B)
    secret = fake.find("Secret", "llm-api-key", NS)["data"]["api-key"]
    assert base64.b64decode(secret).decode() == KEY_B
    assert result["diff"]["before"]["Pods/llm-0"] == {"api_key_sha256": _sha(KEY_A)}
    assert result["diff"]["after"]["Pods/llm-0"] == {"api_key_sha256": _sha(KEY_B)}
    template = result["diff"]["after"]["RayCluster/llm-0"]["spec"]["headGroupSpec"]["template"]
    assert template["metadata"]["annotations"][API_KEY_SHA256_ANNOTATION] == _sha(KEY_B)
    assert KEY_A not in str(result) and KEY_B not in str(result)


def test_a_rerun_with_the_same_key_rolls_nothing():
    fake = _cluster()
    run(fake, _request(KEY_A))
    run(fake, _request(KEY_B))
    state, deleted = fake.snapshot(), _deleted_pods(fake)
    result = run(fake, _request(KEY_B, diff=True))
    assert result["changed"] is False and result["rolled"] == [] and "diff" not in result
    assert fake.snapshot() == state and _deleted_pods(fake) == deleted
    result = run(fake, _request(None))  # no key given: the Secret's key is kept
    assert result["changed"] is False and result["rolled"] == []
    assert fake.snapshot() == state and _deleted_pods(fake) == deleted


def test_check_mode_reports_the_roll_and_writes_nothing():
    fake = _cluster()
    run(fake, _request(KEY_A))
    state = copy.deepcopy(fake.objects)
    writes, calls = list(fake.writes), len(fake.calls)
    result = run(fake, _request(KEY_B, check_mode=True, diff=True))
    assert result["changed"] is True and result["rolled"] == ["llm-0"]
    assert fake.writes == writes and fake.objects == state
    writing = [c for c in fake.calls[calls:] if c[0] in ("apply", "delete")]
    assert writing and all(check for _verb, _kind, check in writing)  # dry runs only
    assert not [c for c in writing if c[:2] == ("delete", "Pod")]
    assert result["diff"]["after"]["Pods/llm-0"] == {"api_key_sha256": _sha(KEY_B)}
    assert _head_sha(fake) == _sha(KEY_A)
    assert KEY_B not in str(result)


def test_replicas_roll_one_at_a_time():
    two = build_plan({"preset": "llama-3-8b"},
                     {"nodes": 4, "gpus_per_node": 2, "gpu_memory_gib": 80},
                     layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 2},
                     topology="head_without_gpus")
    assert two["ray_cluster"]["clusters"] == 2
    fake = _cluster()
    run(fake, _request(KEY_A, plan=two))
    old = {c: set(_pods(fake, c)) for c in ("llm-0", "llm-1")}
    seen_at_second = []
    real_delete = fake.delete

    def _delete(api_version, kind, name, namespace=None, **kwargs):
        if kind == "Pod" and name.startswith("llm-1-"):
            # what llm-0 looked like when llm-1 started to roll: all new and Ready
            seen_at_second.append(set(_pods(fake, "llm-0")))
        return real_delete(api_version, kind, name, namespace, **kwargs)

    fake.delete = _delete
    result = run(fake, _request(KEY_B, plan=two))
    assert result["rolled"] == ["llm-0", "llm-1"]
    assert seen_at_second and all(len(s) == 3 and not s & old["llm-0"] for s in seen_at_second)
    deleted = _deleted_pods(fake)
    assert len(deleted) == 6
    assert [n[:5] for n in deleted] == ["llm-0"] * 3 + ["llm-1"] * 3
    assert not set(_pods(fake, "llm-1")) & old["llm-1"]
    assert _head_sha(fake, "llm-0") == _head_sha(fake, "llm-1") == _sha(KEY_B)


def test_a_head_without_the_digest_rolls_only_when_the_secret_changed():
    fake = _cluster()
    run(fake, _request(KEY_A))
    for key in [k for k in fake.objects if k[0] == "Pod"]:  # pods of an older collection
        fake.objects[key]["base"]["metadata"]["annotations"] = {}
    pods = _pods(fake)
    result = run(fake, _request(KEY_A))
    assert result["rolled"] == [] and _pods(fake) == pods  # its key is the Secret's
    result = run(fake, _request(KEY_B, diff=True))
    assert result["rolled"] == ["llm-0"] and not set(_pods(fake)) & set(pods)
    assert result["diff"]["before"]["Pods/llm-0"] == {"api_key_sha256": "(not recorded)"}


def test_without_wait_the_pods_are_deleted_and_not_waited_for():
    fake = _cluster()
    run(fake, _request(KEY_A))
    before = set(_pods(fake))
    result = run(fake, _request(KEY_B, wait=False))
    assert result["rolled"] == ["llm-0"] and len(_deleted_pods(fake)) == 3
    assert "status" not in result
    assert not set(_pods(fake)) & before


# a new image: an upgrade, or the fix after a pod stuck in ImagePullBackOff

OLD_IMAGE = "registry.example.com/llmops/ray-vllm:0.1.0"
NEW_IMAGE = "registry.example.com/llmops/ray-vllm:0.2.0"
BAD_IMAGE = "registry.invalid/llmops/ray-vllm:0.1.0"


def _images(fake: FakeClient, cluster: str = "llm-0") -> dict:
    """uid -> {container: image}, of the cluster's pods as the fake cluster holds them."""
    return {p["metadata"]["uid"]: {c["name"]: c["image"] for c in p["spec"]["containers"]}
            for p in (fake.render(k) for k in fake.objects if k[0] == "Pod")
            if p["metadata"]["labels"]["ray.io/cluster"] == cluster}


def _diff_images(image: str) -> dict:
    return {"images": {"gpu-workers/ray-worker": image, "head/ray-head": image}}


def test_a_new_image_rolls_every_pod_and_the_diff_shows_the_images():
    fake = _cluster()
    run(fake, _request(KEY_A, image=OLD_IMAGE))
    before = _images(fake)
    result = run(fake, _request(KEY_A, image=NEW_IMAGE, diff=True))
    assert result["changed"] is True and result["rolled"] == ["llm-0"]
    after = _images(fake)
    assert len(after) == 3 and not set(after) & set(before)
    assert {image for pod in after.values() for image in pod.values()} == {NEW_IMAGE}
    assert len(_deleted_pods(fake)) == 3
    assert result["diff"]["before"]["Pods/llm-0"] == _diff_images(OLD_IMAGE)
    assert result["diff"]["after"]["Pods/llm-0"] == _diff_images(NEW_IMAGE)
    assert _head_sha(fake) == _sha(KEY_A)  # the key did not change
    assert KEY_A not in str(result)

    state, deleted = fake.snapshot(), _deleted_pods(fake)
    again = run(fake, _request(None, image=NEW_IMAGE, diff=True))
    assert again["changed"] is False and again["rolled"] == [] and "diff" not in again
    assert fake.snapshot() == state and _deleted_pods(fake) == deleted


def test_a_new_key_and_image_roll_once_and_the_diff_shows_both():
    fake = _cluster()
    run(fake, _request(KEY_A, image=OLD_IMAGE))
    result = run(fake, _request(KEY_B, image=NEW_IMAGE, diff=True))
    assert result["rolled"] == ["llm-0"] and len(_deleted_pods(fake)) == 3
    assert result["diff"]["before"]["Pods/llm-0"] == {"api_key_sha256": _sha(KEY_A),
                                                      **_diff_images(OLD_IMAGE)}
    assert result["diff"]["after"]["Pods/llm-0"] == {"api_key_sha256": _sha(KEY_B),
                                                     **_diff_images(NEW_IMAGE)}
    assert KEY_A not in str(result) and KEY_B not in str(result)


def test_a_roll_that_does_not_finish_says_what_it_rolled_for():
    fake = _cluster()
    run(fake, _request(KEY_A, image=OLD_IMAGE))
    with pytest.raises(WaitTimeout) as raised:
        run(fake, _request(KEY_B, image=BAD_IMAGE, wait_timeout=0))
    msg = str(raised.value)
    assert "the new pods of llm/llm-0 (rolled for a new API key and image)" in msg, msg
    assert "0 of 3 new pods ready; missing: head, worker-0, worker-1" in msg, msg
    assert KEY_B not in msg
    assert set(_images(fake)) and all(  # the successors are there, stuck on the image
        pod == {"ray-worker": BAD_IMAGE} or pod == {"ray-head": BAD_IMAGE}
        for pod in _images(fake).values())


def test_check_mode_reports_the_image_roll_and_writes_nothing():
    fake = _cluster()
    run(fake, _request(KEY_A, image=OLD_IMAGE))
    state, writes, images = copy.deepcopy(fake.objects), list(fake.writes), _images(fake)
    result = run(fake, _request(KEY_A, image=NEW_IMAGE, check_mode=True, diff=True))
    assert result["changed"] is True and result["rolled"] == ["llm-0"]
    assert fake.writes == writes and fake.objects == state and _images(fake) == images
    assert result["diff"]["before"]["Pods/llm-0"] == _diff_images(OLD_IMAGE)
    assert result["diff"]["after"]["Pods/llm-0"] == _diff_images(NEW_IMAGE)


def test_pods_stuck_on_an_unpullable_image_are_replaced_by_the_rerun():
    fake = _cluster()
    run(fake, _request(KEY_A, image=BAD_IMAGE, wait=False))
    stuck = _images(fake)
    assert len(stuck) == 3 and all(  # as the kubelet leaves them: not Ready, backing off
        fake.render(k)["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        == "ImagePullBackOff" for k in fake.objects if k[0] == "Pod")
    result = run(fake, _request(KEY_A, image=OLD_IMAGE, diff=True))
    assert result["rolled"] == ["llm-0"] and result["status"]
    after = _images(fake)
    assert len(after) == 3 and not set(after) & set(stuck)
    assert {image for pod in after.values() for image in pod.values()} == {OLD_IMAGE}
    assert result["diff"]["before"]["Pods/llm-0"] == _diff_images(BAD_IMAGE)
    again = run(fake, _request(KEY_A, image=OLD_IMAGE))
    assert again["changed"] is False and again["rolled"] == [] and _images(fake) == after


def test_one_pod_on_another_image_rolls_the_cluster_and_only_that_image_shows():
    fake = _cluster()
    run(fake, _request(KEY_A, image=OLD_IMAGE))
    worker = next(k for k in fake.objects if k[0] == "Pod"
                  and fake.render(k)["metadata"]["labels"]["ray.io/node-type"] == "worker")
    fake.objects[worker]["base"]["spec"]["containers"][0]["image"] = NEW_IMAGE  # half rolled
    result = run(fake, _request(KEY_A, image=OLD_IMAGE, diff=True))
    assert result["rolled"] == ["llm-0"] and len(_deleted_pods(fake)) == 3
    assert result["diff"]["before"]["Pods/llm-0"] == {
        "images": {"gpu-workers/ray-worker": NEW_IMAGE}}
    assert result["diff"]["after"]["Pods/llm-0"] == {
        "images": {"gpu-workers/ray-worker": OLD_IMAGE}}
    assert {image for pod in _images(fake).values() for image in pod.values()} == {OLD_IMAGE}


def test_a_container_the_template_does_not_name_is_not_compared():
    fake = _cluster()
    run(fake, _request(KEY_A, image=OLD_IMAGE))
    for key in [k for k in fake.objects if k[0] == "Pod"]:  # a webhook's sidecar
        fake.objects[key]["base"]["spec"]["containers"].append(
            {"name": "istio-proxy", "image": "example.com/proxy:1.0"})
    pods = _images(fake)
    result = run(fake, _request(KEY_A, image=OLD_IMAGE))
    assert result["changed"] is False and result["rolled"] == []
    assert _images(fake) == pods and _deleted_pods(fake) == []


def test_replicas_roll_one_at_a_time_for_a_new_image():
    two = build_plan({"preset": "llama-3-8b"},
                     {"nodes": 4, "gpus_per_node": 2, "gpu_memory_gib": 80},
                     layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 2},
                     topology="head_without_gpus")
    fake = _cluster()
    run(fake, _request(KEY_A, plan=two, image=OLD_IMAGE))
    old = set(_images(fake, "llm-0"))
    seen_at_second = []
    real_delete = fake.delete

    def _delete(api_version, kind, name, namespace=None, **kwargs):
        if kind == "Pod" and name.startswith("llm-1-"):
            seen_at_second.append(_images(fake, "llm-0"))
        return real_delete(api_version, kind, name, namespace, **kwargs)

    fake.delete = _delete
    result = run(fake, _request(KEY_A, plan=two, image=NEW_IMAGE))
    assert result["rolled"] == ["llm-0", "llm-1"]
    assert seen_at_second and all(
        len(s) == 3 and not set(s) & old
        and {i for pod in s.values() for i in pod.values()} == {NEW_IMAGE}
        for s in seen_at_second)
    assert [n[:5] for n in _deleted_pods(fake)] == ["llm-0"] * 3 + ["llm-1"] * 3


def test_init_containers_are_compared_by_name_and_an_unknown_group_is_not():
    rc = {"apiVersion": "ray.io/v1", "kind": "RayCluster",
          "metadata": {"name": "llm-0", "namespace": NS,
                       "labels": {"app.kubernetes.io/instance": "llm"}},
          "spec": {"headGroupSpec": {"template": {"spec": {
              "initContainers": [{"name": "fetch", "image": "tools:2"}],
              "containers": [{"name": "ray-head", "image": OLD_IMAGE}]}}},
              "workerGroupSpecs": [{"groupName": "gpu-workers", "template": {"spec": {
                  "containers": [{"name": "ray-worker", "image": OLD_IMAGE}]}}}]}}

    def _pod(name, node_type, group, spec):
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": NS, "uid": name, "labels": {
                    "app.kubernetes.io/instance": "llm", "ray.io/cluster": "llm-0",
                    "ray.io/node-type": node_type, "ray.io/group": group}},
                "spec": spec, "status": {"phase": "Running"}}

    head = {"initContainers": [{"name": "fetch", "image": "tools:1"}],
            "containers": [{"name": "ray-head", "image": OLD_IMAGE}]}
    # a worker of a group this run does not render (being removed): not compared
    other = {"containers": [{"name": "ray-worker", "image": "elsewhere:9"}]}
    fake = FakeClient([rc, _pod("h", "head", "headgroup", head),
                       _pod("w", "worker", "old-group", other)])
    stale = serving_roll.stale_clusters(fake, NS, "llm", [rc], None, False)
    assert stale == {"llm-0": {"before": {"images": {"head/fetch": "tools:1"}},
                               "after": {"images": {"head/fetch": "tools:2"}}}}
    head["initContainers"][0]["image"] = "tools:2"
    fake.put(_pod("h", "head", "headgroup", head), replace=True)
    assert serving_roll.stale_clusters(fake, NS, "llm", [rc], None, False) == {}
