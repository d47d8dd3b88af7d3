"""staging_runner.run against an in-memory cluster: stage, rerun, check mode, timeout, bad input,
and a summary line that tells the truth."""

from __future__ import annotations

import base64
import json

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    ConflictError,
    InvalidInputError,
    OperationFailedError,
    WaitTimeout,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import (
    staging,
    staging_job,
    staging_runner,
)

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


class _SeeSecrets:
    """Records the Secrets and Jobs that exist while a Job runs (before it finishes)."""

    def __init__(self):
        self.secrets, self.jobs = {}, {}

    def __call__(self, cluster):
        for key in list(cluster.objects):
            if key[0] == "Secret":
                self.secrets[key[2]] = cluster.render(key)
            if key[0] == "Job":
                self.jobs[key[2]] = cluster.render(key)


SIGNED = "https://files.example/m?X-Amz-Signature=5ig"


def _values(secret: dict) -> dict:
    """A Secret's values as the API server (and the fake) stores them: base64 ``data``."""
    assert "stringData" not in secret
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_credentials_and_signed_urls_reach_a_secret_removed_when_the_job_ends(cluster):
    seen = _SeeSecrets()
    cluster.controllers.insert(0, seen)
    source = {"type": "http", "url": SIGNED, "manifest": "https://files.example/m.json"}
    result = staging_runner.run(cluster, _request(credentials={"token": "s3cr3t-value"},
                                                  source=source))
    [(name, secret)] = list(seen.secrets.items())
    assert _values(secret) == {"token": "s3cr3t-value", "source-url": SIGNED}
    assert [k for k in cluster.objects if k[0] == "Secret"] == []  # removed after the Job
    job = seen.jobs[name.removesuffix("-credentials")]
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STAGE_URL"] == {"name": "STAGE_URL", "valueFrom": {"secretKeyRef": {
        "name": name, "key": "source-url"}}}
    assert env["STAGE_MANIFEST"]["value"] == "https://files.example/m.json"  # not signed
    for text in (json.dumps(result), json.dumps(job)):
        assert "s3cr3t-value" not in text and "5ig" not in text


def test_a_failed_job_leaves_no_secret_and_a_rerun_sweeps_a_killed_runs_secret(cluster):
    cluster.controllers[:] = [_bind]  # no stager: the Job fails
    cluster.put({"kind": "Secret", "metadata": {  # a run killed before its cleanup
        "name": "stage-tiny-old-credentials", "namespace": NS, "labels": {
            "app.kubernetes.io/component": "model-stager-credentials",
            staging_job.MODEL_LABEL: staging.ModelStaging(cluster, NS, {}, "tiny").model_key,
            staging_job.JOB_LABEL: "stage-tiny-old"}}})

    def _fail(cluster):
        for key in [k for k in cluster.objects if k[0] == "Job"]:
            cluster.put({"kind": "Job", "metadata": {"name": key[2], "namespace": NS},
                         "status": {"conditions": [{"type": "Failed", "status": "True"}]}})
    cluster.controllers.append(_fail)
    with pytest.raises(OperationFailedError, match="the stager Job llm/stage-tiny-"):
        staging_runner.run(cluster, _request(credentials={"token": "t0ken"}))
    assert [k for k in cluster.objects if k[0] == "Secret"] == []


def test_a_live_job_of_another_run_is_never_deleted(cluster):
    other = {"kind": "Job", "metadata": {"name": "stage-tiny-0ther", "namespace": NS},
             "status": {"active": 1}}
    cluster.put(other)
    stager = cluster.controllers[-1]
    cluster.controllers[-1] = lambda c: _finish_except(c, stager)  # the other one stays live
    result = staging_runner.run(cluster, _request())
    assert result["changed"]
    assert ("delete", "Job", "stage-tiny-0ther") not in cluster.writes
    assert cluster.render(("Job", NS, "stage-tiny-0ther"))["status"] == {"active": 1}
    jobs = [w[2] for w in cluster.writes if w[:2] == ("apply", "Job")]
    assert len(jobs) == 1 and jobs[0].startswith("stage-tiny-") and jobs[0] != "stage-tiny-0ther"
    env = cluster.render(("Job", NS, jobs[0]))["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "STAGE_LOCK_WAIT", "value": "3600"} in env  # waits for the other stager


def _finish_except(cluster, stager):
    live = cluster.objects.pop(("Job", NS, "stage-tiny-0ther"))
    try:
        stager(cluster)
    finally:
        cluster.objects[("Job", NS, "stage-tiny-0ther")] = live


class _Racing(FakeClient):
    """A PVC whose record another run rewrites between our read and our write, once."""

    def __init__(self):
        super().__init__()
        self.rv, self.conflicts = 1, 0

    def get(self, api_version, kind, name, namespace=None):
        obj = super().get(api_version, kind, name, namespace)
        if obj and kind == "PersistentVolumeClaim":
            obj["metadata"]["resourceVersion"] = str(self.rv)
        return obj

    def apply(self, manifest, **kwargs):
        wanted = manifest["metadata"].get("resourceVersion")
        if manifest["kind"] == "PersistentVolumeClaim" and wanted:
            if self.conflicts == 0:  # the other run's write lands first
                self.conflicts += 1
                self.rv += 1
                self.put({"kind": "PersistentVolumeClaim", "metadata": {
                    "name": "models", "namespace": NS, "annotations": {
                        staging.ANNOTATION: json.dumps({"other": "abc"})}}})
                raise ConflictError("the object has been modified", status=409)
            assert wanted == str(self.rv)
            manifest = {**manifest, "metadata": {
                k: v for k, v in manifest["metadata"].items() if k != "resourceVersion"}}
            self.rv += 1
        return super().apply(manifest, **kwargs)


def test_the_record_is_written_with_a_precondition_and_retried_on_conflict():
    cluster = _Racing()
    cluster.controllers += [_bind, _Stager()]
    staging_runner.run(cluster, _request())
    assert cluster.conflicts == 1
    pvc = cluster.render(("PersistentVolumeClaim", NS, "models"))
    recorded = json.loads(pvc["metadata"]["annotations"][staging.ANNOTATION])
    assert recorded == {"other": "abc", "tiny": staging.source_identity(SOURCE, None)}


def test_verify_digests_reaches_the_stager_and_a_local_model_is_uploaded_again(cluster, tmp_path):
    (tmp_path / "w.bin").write_bytes(b"x" * 10)
    source = {"type": "local", "local_path": str(tmp_path)}
    staging_runner.run(cluster, _request(source=source))
    assert not staging_runner.run(cluster, _request(source=source, state="volume"))[
        "transfer_expected"]
    seen = _SeeSecrets()
    cluster.controllers.insert(0, seen)
    volume = staging_runner.run(cluster, _request(source=source, state="volume",
                                                  verify="digests"))
    assert volume["transfer_expected"]  # the stager can only repair from a fresh upload
    first = set(seen.jobs)
    assert [k for k in cluster.objects if k[0] == "Job" and k[2] not in first] == []
    staging_runner.run(cluster, _request(source=source, verify="digests"))
    (job,) = [j for name, j in seen.jobs.items() if name not in first]
    assert {"name": "STAGE_VERIFY", "value": "1"} in job["spec"]["template"]["spec"][
        "containers"][0]["env"]


def test_the_volume_wait_names_the_unbound_pvc(cluster):
    cluster.controllers.remove(_bind)
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as err:
        staging_runner.run(cluster, _request(timeout=20, clock=clock))
    assert "waiting for the model volume: missing: PVC models Bound (phase none)" in err.value.msg
    assert [w for w in cluster.writes if w[1] == "Job"] == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"source": {"type": "ftp"}}, "source.type must be one of"),
    ({"source": {"type": "s3"}}, "source type s3 needs source.bucket"),
    ({"model_dir": "../etc"}, "model_dir .*\\.\\."),
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


def test_a_local_run_uploads_into_its_own_directory_and_tells_the_stager(cluster, tmp_path):
    (tmp_path / "w.bin").write_bytes(b"x" * 10)
    source = {"type": "local", "local_path": str(tmp_path)}
    volume = staging_runner.run(cluster, _request(source=source, state="volume",
                                                  upload_id="run1"))
    assert volume["upload_dir"] == "/models/.gpu-stack-staging/tiny.upload/run1"
    seen = _SeeSecrets()
    cluster.controllers.insert(0, seen)
    staging_runner.run(cluster, _request(source=source, upload_id="run1"))
    [job] = list(seen.jobs.values())
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "STAGE_UPLOAD_DIR", "value": volume["upload_dir"]} in env
    with pytest.raises(InvalidInputError, match="upload_id must be"):
        staging_runner.run(cluster, _request(source=source, upload_id="../x"))
