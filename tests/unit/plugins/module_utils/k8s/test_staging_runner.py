"""staging_runner.run against an in-memory cluster: stage, rerun, check mode, timeout, bad input,
and a summary line that tells the truth."""

from __future__ import annotations

import json

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
    WaitTimeout,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import staging, staging_runner

from .fake_client import FakeClient, FakeClock

NS = "llm"
SOURCE = {"type": "hub", "repo_id": "org/tiny"}


def _bind(cluster):
    pvc = cluster.render(("PersistentVolumeClaim", NS, "models"))
    if pvc and not (pvc.get("status") or {}).get("phase"):
        cluster.put({"kind": "PersistentVolume", "metadata": {"name": "pv-models"},
                     "spec": {"persistentVolumeReclaimPolicy": "Delete"}})
        cluster.put({"kind": "PersistentVolumeClaim",
                     "metadata": {"name": "models", "namespace": NS},
                     "spec": {"volumeName": "pv-models"}, "status": {"phase": "Bound"}})


class _Stager:
    """Plays the Job controller and the stager: the first run transfers, later ones do not."""

    def __init__(self):
        self.runs = 0

    def __call__(self, cluster):
        for key in [k for k in cluster.objects if k[0] == "Job"]:
            job = cluster.render(key)
            if job.get("status"):
                continue
            self.runs += 1
            first = self.runs == 1
            cluster.put({"kind": "Job", "metadata": {"name": key[2], "namespace": NS},
                         "status": {"conditions": [{"type": "Complete", "status": "True"}]}})
            pod = f"{key[2]}-abc"
            cluster.put({"kind": "Pod", "metadata": {"name": pod, "namespace": NS,
                                                     "labels": {"job-name": key[2]}}})
            cluster.pod_logs[pod] = "progress...\n" + json.dumps({
                "changed": first, "reason": "not staged" if first else "marker matches",
                "transfer_bytes": 300 if first else 0,
                "marker": {"file_count": 2, "total_bytes": 300}})


@pytest.fixture
def cluster():
    fake = FakeClient()
    fake.controllers += [_bind, _Stager()]
    return fake


def _request(clock=None, **kwargs):
    opts = {"namespace": NS, "pvc": {"name": "models", "size": "1Gi"}, "model_dir": "tiny",
            "source": SOURCE, "image": "runtime:1", **kwargs}
    return staging_runner.Request(wait_options=(clock or FakeClock()).options(), **opts)


def test_stage_then_rerun_with_summaries_that_tell_the_truth(cluster):
    result = staging_runner.run(cluster, _request())
    assert result["changed"] and result["transfer_expected"]
    assert result["msg"] == ("staged tiny on PVC models: 2 files, 300 bytes, 300 bytes fetched "
                             "(was: not staged)")
    pvc = cluster.render(("PersistentVolumeClaim", NS, "models"))
    recorded = json.loads(pvc["metadata"]["annotations"][staging.ANNOTATION])
    assert recorded == {"tiny": staging.source_identity(SOURCE, None)}
    pv = cluster.render(("PersistentVolume", None, "pv-models"))
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert result["diff"]["before"]["staged"] == {"tiny": None}
    assert result["diff"]["after"]["staged"] == recorded

    again = staging_runner.run(cluster, _request())
    assert not again["changed"] and not again["transfer_expected"]
    assert again["msg"] == "tiny on PVC models already staged: 2 files, 300 bytes (marker matches)"
    assert "not staged" not in again["msg"]


def test_check_mode_writes_nothing_and_predicts_the_transfer(cluster):
    before = cluster.snapshot()
    result = staging_runner.run(cluster, _request(check_mode=True))
    assert cluster.snapshot() == before and cluster.writes == []
    assert result["changed"] and result["msg"] == "check mode: tiny on PVC models would be staged"
    assert result["diff"]["after"]["PersistentVolumeClaim/models"]["spec"]["accessModes"] == [
        "ReadWriteMany"]

    staging_runner.run(cluster, _request())
    writes = len(cluster.writes)
    checked = staging_runner.run(cluster, _request(check_mode=True))
    assert len(cluster.writes) == writes
    assert not checked["changed"]
    assert checked["msg"] == "check mode: tiny on PVC models is already staged"


def test_credentials_reach_a_secret_but_never_the_result(cluster):
    result = staging_runner.run(cluster, _request(credentials={"token": "s3cr3t-value"}))
    secret = cluster.render(("Secret", NS, "stage-tiny-credentials"))
    assert secret["stringData"] == {"token": "s3cr3t-value"}
    assert "s3cr3t-value" not in json.dumps(result)
    job = cluster.render(("Job", NS, "stage-tiny"))
    assert "s3cr3t-value" not in json.dumps(job)


def test_the_volume_wait_names_the_unbound_pvc(cluster):
    cluster.controllers.remove(_bind)
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as err:
        staging_runner.run(cluster, _request(timeout=20, clock=clock))
    assert "waiting for the model volume: missing: PVC models Bound (phase none)" in err.value.msg
    assert ("apply", "Job", "stage-tiny") not in cluster.writes


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"source": {"type": "ftp"}}, "source.type must be one of"),
    ({"source": {"type": "s3"}}, "source type s3 needs source.bucket"),
    ({"model_dir": "../etc"}, "model_dir must be a relative path"),
    ({"state": "gone"}, "state must be one of staged, volume"),
    ({"pvc": {"name": "models", "nfs": {"server": "nfs"}}}, "pvc.nfs needs server and path"),
    ({"pvc": {"name": "models", "storage_class": "thin-csi"}}, "not ReadWriteMany"),
])
def test_bad_input_is_refused_before_the_first_write(cluster, kwargs, message):
    cluster.put({"kind": "StorageClass", "metadata": {"name": "thin-csi"},
                 "provisioner": "csi.vsphere.vmware.com"})
    with pytest.raises(InvalidInputError, match=message):
        staging_runner.run(cluster, _request(**kwargs))
    assert cluster.writes == []


def test_an_existing_rwo_pvc_is_refused_before_the_first_write(cluster):
    cluster.put({"kind": "PersistentVolumeClaim", "metadata": {"name": "models", "namespace": NS},
                 "spec": {"accessModes": ["ReadWriteOnce"]}})
    with pytest.raises(InvalidInputError, match="must be ReadWriteMany"):
        staging_runner.run(cluster, _request())
    assert cluster.writes == []


@pytest.mark.parametrize(("out", "check", "state", "line"), [
    ({"transfer_expected": True}, False, "volume", "volume ready; m on PVC p needs a transfer"),
    ({"transfer_expected": False}, True, "volume",
     "check mode: volume ready; m on PVC p is already staged"),
    ({"transfer_expected": True, "result": {"changed": True, "reason": "stale files",
                                            "transfer_bytes": 5, "marker": {
                                                "file_count": 1, "total_bytes": 5}}},
     False, "staged", "staged m on PVC p: 1 files, 5 bytes, 5 bytes fetched (was: stale files)"),
    ({"transfer_expected": True, "result": {"changed": True, "reason": "not staged",
                                            "transfer_bytes": 0, "marker": {
                                                "file_count": 2, "total_bytes": 9}}},
     False, "staged", "staged m on PVC p: 2 files, 9 bytes (was: not staged)"),
])
def test_summary(out, check, state, line):
    assert staging_runner.summary("m", "p", out, check, state) == line
