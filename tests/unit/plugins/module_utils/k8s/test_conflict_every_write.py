"""A 409 on every Kubernetes write of every stage is retried and the stage converges.

The table is not written by hand: each stage runs once against the in-memory cluster
through the real K8sClient (``conflict_api``), and every real write it made (apply or
delete, the n-th of that object) becomes a case. Each case runs the stage again on a fresh
cluster with exactly that write answered by the API server's 409 ("the object has been
modified"), and must end the same way (the same result, or the same error for a run that
fails by design) with the same objects in the cluster, read from the cluster's store.
A write added to a stage joins the table by itself.
"""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import (
    gateway,
    gateway_runner,
    gpu_nodes_runner,
    olm_runner,
    serving,
    serving_runner,
    staging,
    staging_runner,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.drain import (
    DrainRequest,
    NodeDrain,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.gpu_nodes import OUR_GPU_NODE

from . import test_drain as drain_t
from . import test_gateway_runner as gateway_t
from . import test_olm_runner as olm_t
from . import test_serving_roll as roll_t
from . import test_serving_runner as serving_t
from . import test_staging_runner as staging_t
from .conflict_api import ConflictApi, RealClient, route_evictions, write_paths
from .fake_client import FakeClient, FakeClock


def _nodes() -> FakeClient:
    fake = FakeClient()
    for name, gpus in (("w0", "2"), ("w1", "0"), ("w2", "2")):
        fake.put({"kind": "Node", "metadata": {"name": name, "labels": {"zone": "a"}},
                  "status": {"allocatable": {"nvidia.com/gpu": gpus}}})
    # w2 was a GPU worker of an earlier run: our labels come off it
    fake.put({"kind": "Node", "metadata": {"name": "w2", "labels": {OUR_GPU_NODE: "true"}}})
    return fake


def _label_nodes(client):
    return gpu_nodes_runner.run(client, gpu_nodes_runner.Request(
        workers=[{"vm": "w0", "gpus": 2}, {"vm": "w1", "gpus": 2}], labels={"pool": "gpu"},
        wait_options=FakeClock().options()))


def _olm() -> FakeClient:
    fake = FakeClient()
    fake.put({"kind": "PackageManifest", "metadata": {"name": olm_t.PKG,
                                                      "namespace": "openshift-marketplace"},
              "status": {"catalogSource": "certified-operators", "defaultChannel": "v25.3",
                         "channels": [{"name": "v25.3", "currentCSV": olm_t.HEAD, "entries": [
                             {"name": olm_t.HEAD, "version": "25.3.1"},
                             {"name": olm_t.PINNED, "version": "25.3.0"}]}]}})
    fake.controllers.append(olm_t._olm())
    return fake


def _install_operator(client):
    return olm_runner.run(client, olm_t._request())


def _killed_run_secret(fake: FakeClient) -> None:
    fake.put({"kind": "Secret", "metadata": {
        "name": "stage-tiny-old-credentials", "namespace": staging_t.NS, "labels": {
            "app.kubernetes.io/component": "model-stager-credentials",
            staging_t.staging_job.MODEL_LABEL: staging.ModelStaging(
                fake, staging_t.NS, {}, "tiny").model_key,
            staging_t.staging_job.JOB_LABEL: "stage-tiny-old"}}})


def _volume() -> FakeClient:
    fake = FakeClient()
    fake.controllers += [staging_t._bind, staging_t._Stager()]
    _killed_run_secret(fake)
    return fake


def _stuck_volume() -> FakeClient:
    """The Job never finishes: the wait times out and the run stops its own Job."""
    fake = FakeClient()
    fake.controllers.append(staging_t._bind)
    return fake


def _stage(client, **kwargs):
    source = {"type": "http", "url": "https://files.example/m?sig=1",
              "manifest": "https://files.example/m.json"}
    return staging_runner.run(client, staging_t._request(
        credentials={"token": "t0ken"}, source=source, **kwargs))


def _stage_stuck(client):
    return _stage(client, timeout=5)


def _stage_local(client):
    """A local model: its file list goes to the stager in a ConfigMap."""
    return staging_runner.run(client, staging_t._request(
        source={"type": "local", "local_path": str(_LOCAL["dir"])}, upload_id="run1"))


def _serve(client):
    return serving_runner.run(client, serving_t._request())


def _served() -> FakeClient:
    fake = serving_t._cluster()
    serving_runner.run(fake, serving_t._request())
    fake.writes.clear()
    return fake


def _served_with_key_a() -> FakeClient:
    roll_t._UIDS = itertools.count(1)  # the same pod names in every run of the case
    fake = roll_t._cluster()
    serving_runner.run(fake, roll_t._request(roll_t.KEY_A))
    fake.writes.clear()
    return fake


def _rotate_key(client):
    """A new key: the Secret is rewritten and every pod of the stack deleted (rolled)."""
    return serving_runner.run(client, roll_t._request(roll_t.KEY_B))


def _unserve(client):
    return serving_runner.run(client, serving_t._request(state="absent"))


def _gateway(client):
    return gateway_runner.run(client, gateway_t._request())


def _drain_site() -> FakeClient:
    return drain_t.DrainFake(drain_t._site())


def _power_cycle(client):
    """vm_gpu_passthrough's drain around a power cycle: cordon, evict, Ready with a new
    boot, uncordon."""
    clock = FakeClock()
    drain = NodeDrain(lambda: client, DrainRequest(interval=1.0, progress_every=10.0),
                      progress=None, clock=clock, sleep=clock.sleep)
    drain.prepare("ocp-worker-0", drain_t.UUID)
    drain.drain()
    client.dynamic.cluster.put(drain_t.node("worker-a", boot="boot-2"))  # the VM came back
    drain.restore()
    return {"changed": True}


STAGES = {
    "ocp_gpu_nodes": (_nodes, _label_nodes),
    "olm_operator": (_olm, _install_operator),
    "model_stage": (_volume, _stage),
    "model_stage-stuck-job": (_stuck_volume, _stage_stuck),
    "model_stage-local": (_volume, _stage_local),
    "ray_vllm_cluster": (serving_t._cluster, _serve),
    "ray_vllm_cluster-absent": (_served, _unserve),
    "ray_vllm_cluster-new-key": (_served_with_key_a, _rotate_key),
    "vm_gpu_passthrough-drain": (_drain_site, _power_cycle),
    "llm_gateway": (gateway_t._cluster, _gateway),
}


_LOCAL: dict = {}


@pytest.fixture(autouse=True)
def _fixed_names(monkeypatch, tmp_path):
    """The run id and the generated API key, the same in every run (compared states);
    a local model's files; evictions sent to the in-memory cluster."""
    route_evictions(monkeypatch)
    (tmp_path / "w.bin").write_bytes(b"x" * 10)
    monkeypatch.setitem(_LOCAL, "dir", tmp_path)
    monkeypatch.setattr(staging.secrets, "token_hex", lambda n=None: "0a0b0c")
    monkeypatch.setattr(serving.secrets, "token_urlsafe", lambda n=None: "k" * 43)
    monkeypatch.setattr(gateway.secrets, "token_urlsafe", lambda n=None: "g" * 43)


def _outcome(stage: str, client) -> tuple:
    _make, act = STAGES[stage]
    try:
        result = act(client)
    except Exception as exc:  # a stage that fails by design must fail the same way
        return ("error", type(exc).__name__, str(exc))
    return ("ok", result.get("changed"), result.get("msg"))


def _clean(stage: str) -> tuple:
    cluster = STAGES[stage][0]()
    api = ConflictApi(cluster)
    outcome = _outcome(stage, RealClient(api, []))
    return outcome, _state(cluster), write_paths(cluster.writes)


def _state(cluster: FakeClient) -> dict:
    """The cluster's objects; pods (whose names and uids a controller makes up) by what
    they are: their RayCluster or Job, their role and their annotations."""
    out, pods = {}, []
    for key, obj in cluster.snapshot().items():
        if key[0] != "Pod":
            out[key] = obj
            continue
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        pods.append(repr((labels.get("ray.io/cluster") or labels.get("job-name"),
                          labels.get("ray.io/node-type"), meta.get("annotations"))))
    out["pods"] = sorted(pods)
    return out


def test_each_stage_writes_through_the_real_client():
    """The table covers every kind of write each stage makes (a guard against a table
    that silently shrank: each stage's writes, by kind)."""
    kinds = {stage: sorted({(w[0], w[1]) for w in _clean(stage)[2]}) for stage in STAGES}
    assert kinds["ocp_gpu_nodes"] == [("apply", "Node")]
    assert kinds["olm_operator"] == [("apply", k) for k in (
        "InstallPlan", "Namespace", "OperatorGroup", "Subscription")]
    assert kinds["model_stage"] == [
        ("apply", "Job"), ("apply", "Namespace"), ("apply", "PersistentVolume"),
        ("apply", "PersistentVolumeClaim"), ("apply", "Secret"), ("delete", "Secret")]
    assert ("delete", "Job") in kinds["model_stage-stuck-job"]
    assert {("apply", "ConfigMap"), ("delete", "ConfigMap")} <= set(kinds["model_stage-local"])
    assert {("apply", k) for k in ("Secret", "RayCluster", "Service", "Route",
                                   "NetworkPolicy", "ConfigMap")} <= set(
        kinds["ray_vllm_cluster"])
    assert {("delete", k) for k in ("RayCluster", "Route", "Service", "Secret",
                                    "ConfigMap")} <= set(kinds["ray_vllm_cluster-absent"])
    assert {("apply", "Secret"), ("delete", "Pod")} <= set(kinds["ray_vllm_cluster-new-key"])
    assert kinds["vm_gpu_passthrough-drain"] == [("apply", "Node"), ("evict", "Pod")]


def _with_one_409(stage: str, fault: tuple, expected: tuple, expected_state: dict) -> list:
    """What went wrong when ``fault`` was injected (nothing: an empty list)."""
    cluster = STAGES[stage][0]()
    api, pauses = ConflictApi(cluster, fault), []
    outcome = _outcome(stage, RealClient(api, pauses))
    wrong = []
    if api.served != [fault]:
        wrong.append(f"the 409 was not answered (served: {api.served})")
    if outcome != expected:
        wrong.append(f"ended {outcome}, not {expected}")
    if _state(cluster) != expected_state:
        wrong.append("the cluster holds other objects than after a run without the 409")
    # retried by K8sClient after one pause, or (the PVC record, written with a
    # precondition) re-read and rebuilt by its caller
    if pauses != [1.0] and (fault[1], fault[2]) != ("PersistentVolumeClaim", "models"):
        wrong.append(f"K8sClient paused {pauses}, not once")
    return wrong


@pytest.mark.parametrize("stage", list(STAGES))
def test_one_409_on_each_write_is_retried_and_the_stage_converges(stage):
    expected, expected_state, writes = _clean(stage)
    assert writes
    failures = {fault: wrong for fault in writes
                if (wrong := _with_one_409(stage, fault, expected, expected_state))}
    assert failures == {}


@pytest.mark.parametrize("stage", ["ocp_gpu_nodes", "olm_operator", "model_stage",
                                   "ray_vllm_cluster", "ray_vllm_cluster-new-key"])
def test_a_rerun_after_the_409_changes_nothing(stage, monkeypatch):
    make, _act = STAGES[stage]
    writes = _clean(stage)[2]
    cluster = make()
    _outcome(stage, RealClient(ConflictApi(cluster, writes[0]), []))
    monkeypatch.setattr(staging.secrets, "token_hex", lambda n=None: "0d0e0f")  # a new run
    state = _lasting(cluster)
    outcome = _outcome(stage, RealClient(ConflictApi(cluster), []))
    assert outcome[:2] == ("ok", False), outcome
    assert _lasting(cluster) == state


def _lasting(cluster: FakeClient) -> dict:
    """The objects a rerun must leave as they were: all but each staging run's own Job
    and its pod (a rerun checks the volume through a Job of its own)."""
    state = {key: obj for key, obj in _state(cluster).items()
             if key == "pods" or key[0] != "Job"}
    state["pods"] = [p for p in state["pods"] if not p.startswith("('stage-")]
    return copy.deepcopy(state)


PLUGINS = Path(__file__).resolve().parents[5] / "plugins"
READ_ONLY = {"gpu_fleet_report"}  # reads nodes and pods, writes nothing
_RAW_WRITE = re.compile(r"\b(CoreV1Api|CustomObjectsApi|AppsV1Api|BatchV1Api|DynamicClient)\b"
                        r"|\.(create|patch|replace|delete)_(namespaced_\w+|node|namespace|"
                        r"persistent_volume|cluster_custom_object)\(")


def test_every_kubernetes_write_goes_through_k8sclient_and_every_writer_is_in_the_table():
    """The table above covers the product's writers: no module_utils file but the client
    calls the kubernetes client's write APIs, and each module on the Kubernetes API
    (K8sClient, the drain) is a stage of the table or known to only read."""
    raw = [str(p.relative_to(PLUGINS)) for p in PLUGINS.rglob("*.py")
           if p.name != "client.py" and _RAW_WRITE.search(p.read_text())]
    assert raw == []
    writers = {p.stem for p in (PLUGINS / "modules").glob("*.py")
               if re.search(r"\bK8sClient\b|\bnode_drain\b|module_utils\.k8s\b", p.read_text())}
    assert writers - READ_ONLY == {stage.split("-")[0] for stage in STAGES}
