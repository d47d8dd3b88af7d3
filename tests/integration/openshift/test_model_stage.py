"""model_stage and the model_storage role against the lab: the stager really runs as the
Job's process, the files are read back from the volume's directory, the API is listed."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import tarfile
import threading
from pathlib import Path

import pytest
from kubernetes import client

from ..lab.waiting import wait_for
from .k8s_helpers import REPO, api, lab_conflict, lab_faults, namespaces, run_module, run_play

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _model(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (root / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 2000)
    return root


def _volume_dir(lab, claim: str, ns: str) -> Path:
    core = client.CoreV1Api(api(lab))
    pv = core.read_namespaced_persistent_volume_claim(claim, ns).spec.volume_name
    path = core.read_persistent_volume(pv).metadata.annotations["gpu-lab.llmops.io/local-path"]
    return Path(path)


def _stager_secrets(lab, ns: str) -> list[str]:
    return [s.metadata.name for s in client.CoreV1Api(api(lab)).list_namespaced_secret(
        ns, label_selector="app.kubernetes.io/component=model-stager-credentials").items]


def _digests(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".gpu")}


def _storage(lab, tmp_path, model: Path, *extra, model_dir: str = "tiny"):
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text(json.dumps({
        "gpu_stack_k8s_auth": {"kubeconfig": str(lab.kubeconfig)},
        "model_storage_namespace": "llm", "model_storage_model_dir": model_dir,
        "model_storage_pvc": {"name": "models", "storage_class": "nfs-csi", "size": "1Gi"},
        "model_storage_source": {"type": "local", "local_path": str(model)},
        "model_storage_image": "registry.example.com/llmops/gpu-stack-runtime:0.1.0"}))
    return run_play(lab, tmp_path, playbook=REPO / "playbooks" / "storage.yml",
                    extra=("-e", f"@{vars_file}", *extra), json_out=False,
                    env_extra={"ANSIBLE_DISPLAY_SKIPPED_HOSTS": "false"})


def test_local_model_staged_then_noop(k8s_lab_factory, tmp_path):
    lab = k8s_lab_factory()
    model = _model(tmp_path / "model")
    spaces = namespaces(lab)
    rc, _tasks, out = _storage(lab, tmp_path, model, "--check")
    assert rc == 0, out[-3000:]
    assert namespaces(lab) == spaces  # check mode created nothing

    # the loader pod's create (server-side apply) and delete each meet one 409, retried
    lab_conflict(lab, "patch", "pods", "llm")
    lab_conflict(lab, "delete", "pods", "llm")
    rc, _tasks, out = _storage(lab, tmp_path, model)
    assert rc == 0, out[-3000:]
    assert "Upload the model files" in out
    assert lab_faults(lab) == []
    retried = " ".join(out.split())
    assert "FAILED - RETRYING: [localhost]: Start the loader pod on the volume" in retried
    assert "FAILED - RETRYING: [localhost]: Remove the loader pod" in retried
    # the summary says what happened, the read-back passes, Ansible warns of nothing
    words = " ".join(out.split())  # the callback wraps long lines
    assert "staged tiny on PVC models: 2 files, " in words and "(was: not staged)" in words
    assert "The model is staged on the volume" in out and "is unsafe" not in out
    published = _volume_dir(lab, "models", "llm") / "tiny"
    assert _digests(published) == _digests(model)
    marker = json.loads((published / ".gpu-stack-stage.json").read_text())
    assert marker["file_count"] == 2 and marker["source"]["type"] == "local"
    pv = client.CoreV1Api(api(lab)).read_persistent_volume(
        client.CoreV1Api(api(lab)).read_namespaced_persistent_volume_claim(
            "models", "llm").spec.volume_name)
    assert pv.spec.persistent_volume_reclaim_policy == "Retain"

    rc, _tasks, out = _storage(lab, tmp_path, model)
    assert rc == 0, out[-3000:]
    assert "changed=0" in out and "marker matches" in out
    words = " ".join(out.split())
    assert "tiny on PVC models already staged: 2 files, " in words and "not staged" not in words
    assert "Upload the model files" not in out  # the volume already holds this model

    # each phase runs alone by its tag: verify reads the volume's record, stages nothing
    rc, _tasks, out = _storage(lab, tmp_path, model, "--tags", "verify")
    assert rc == 0, out[-3000:]
    assert "The model is staged on the volume" in out and "Stage the model" not in out


@pytest.fixture
def web_root(tmp_path):
    root = _model(tmp_path / "www")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_source_through_the_job_and_secret_never_logged(k8s_lab_factory, tmp_path,
                                                             web_root):
    lab = k8s_lab_factory()
    root, url = web_root
    manifest = {"files": [{"path": p, "size": (root / p).stat().st_size, "sha256": d}
                          for p, d in _digests(root).items()]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    args = {"namespace": "web", "model_dir": "from-http",
            "pvc": {"name": "models", "storage_class": "nfs-csi", "size": "1Gi"},
            "source": {"type": "http", "url": url, "manifest": f"{url}/manifest.json"},
            "credentials": {"token": "s3cr3t-token-value"}}
    rc, _first, out = run_module(lab, tmp_path, "model_stage", args, extra=("-vvv",),
                                 json_out=False)
    assert rc == 0, out[-3000:]
    assert "s3cr3t-token-value" not in out
    published = _volume_dir(lab, "models", "web") / "from-http"
    assert _digests(published) == {k: v for k, v in _digests(root).items()
                                   if k != "manifest.json"}
    # the credentials lived as long as the Job: none is left once it ended
    assert _stager_secrets(lab, "web") == []
    (job,) = client.BatchV1Api(api(lab)).list_namespaced_job("web").items
    assert job.status.succeeded == 1

    rc, again, out = run_module(lab, tmp_path, "model_stage", args)
    assert rc == 0, out[-3000:]
    assert again["changed"] is False and again["result"]["changed"] is False


def test_missing_file_fails_cleanly(k8s_lab_factory, tmp_path, web_root):
    lab = k8s_lab_factory()
    _root, url = web_root
    (tmp_path / "www" / "manifest.json").write_text(json.dumps(
        {"files": [{"path": "gone.bin", "size": 10, "sha256": "0" * 64}]}))
    rc, result, out = run_module(lab, tmp_path, "model_stage", {
        "namespace": "web", "model_dir": "broken", "timeout": 120,
        "pvc": {"name": "models", "storage_class": "nfs-csi", "size": "1Gi"},
        "source": {"type": "http", "url": url, "manifest": f"{url}/manifest.json"}})
    assert rc != 0, out
    assert result["msg"].startswith("the stager Job web/stage-broken-"), result
    assert " failed: " in result["msg"]
    assert not (_volume_dir(lab, "models", "web") / "broken").exists()


@pytest.mark.parametrize(("pvc", "message"), [
    ({"name": "models", "storage_class": "thin-csi"},
     "StorageClass thin-csi (csi.vsphere.vmware.com) provides block volumes"),
    ({"name": "models", "storage_class": "no-such-class"}, "StorageClass no-such-class does not"),
])
def test_non_rwx_storage_is_refused_before_any_write(k8s_lab, tmp_path, pvc, message):
    rc, result, out = run_module(k8s_lab, tmp_path, "model_stage", {
        "namespace": "refused", "model_dir": "m", "pvc": pvc,
        "source": {"type": "hub", "repo_id": "org/model"}})
    assert rc != 0, out
    assert message in result["msg"]
    assert "refused" not in namespaces(k8s_lab)


def test_existing_rwo_claim_is_refused(k8s_lab, tmp_path):
    core = client.CoreV1Api(api(k8s_lab))
    core.create_namespace({"metadata": {"name": "rwo"}})
    core.create_namespaced_persistent_volume_claim("rwo", {
        "metadata": {"name": "models"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "thin-csi",
                 "resources": {"requests": {"storage": "1Gi"}}}})
    rc, result, out = run_module(k8s_lab, tmp_path, "model_stage", {
        "namespace": "rwo", "model_dir": "m", "pvc": {"name": "models"},
        "source": {"type": "hub", "repo_id": "org/model"}})
    assert rc != 0, out
    assert "must be ReadWriteMany" in result["msg"]
    assert client.BatchV1Api(api(k8s_lab)).list_namespaced_job("rwo").items == []


@pytest.mark.parametrize("model_dir", ["tiny ../other", "../other", "/models/other"])
def test_an_unsafe_model_dir_is_refused_before_any_write(k8s_lab, tmp_path, model_dir):
    """The model_storage role (model_stage, then the loader pod's command) and
    ray_vllm_cluster: a model_dir with a space, a '..' or a leading '/' fails at once."""
    model = _model(tmp_path / "model")
    before = namespaces(k8s_lab)
    vars_file = tmp_path / "unsafe.json"
    vars_file.write_text(json.dumps({
        "gpu_stack_k8s_auth": {"kubeconfig": str(k8s_lab.kubeconfig)},
        "model_storage_namespace": "unsafe", "model_storage_model_dir": model_dir,
        "model_storage_pvc": {"name": "models", "storage_class": "nfs-csi", "size": "1Gi"},
        "model_storage_source": {"type": "local", "local_path": str(model)}}))
    rc, _tasks, out = run_play(k8s_lab, tmp_path, playbook=REPO / "playbooks" / "storage.yml",
                               extra=("-e", f"@{vars_file}"), json_out=False)
    assert rc != 0, out[-3000:]
    words = " ".join(out.split())
    assert "model_dir must be a relative path on the model volume" in words, out[-3000:]
    assert "Upload the model files" not in out
    assert namespaces(k8s_lab) == before  # no namespace, claim, Job or pod was created

    rc, result, out = run_module(k8s_lab, tmp_path, "ray_vllm_cluster", {
        "namespace": "unsafe", "plan": {"replicas": 1},
        "image": "registry.example.com/example/sim:1.0",
        "served_model_name": "m", "model_dir": model_dir, "wait": False})
    assert rc != 0, out[-3000:]
    assert result["msg"].startswith("model_dir must be a relative path"), result
    assert namespaces(k8s_lab) == before


class _GatedHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the model, but holds every weights download until the test opens the gate:
    the first stager is then mid-transfer (holding the lock) while the others start."""

    gate: threading.Event

    def do_GET(self):
        if self.path.endswith(".bin"):
            self.gate.wait(120)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def gated_web(tmp_path):
    root = _model(tmp_path / "gated")
    gate = threading.Event()
    handler = functools.partial(type("Gated", (_GatedHandler,), {"gate": gate}),
                                directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", gate
    gate.set()
    server.shutdown()


def _jobs_of(lab, ns: str, model_dir: str) -> list:
    key = hashlib.sha256(model_dir.encode()).hexdigest()[:16]
    return client.BatchV1Api(api(lab)).list_namespaced_job(
        ns, label_selector=f"gpu-stack.llmops.io/model={key}").items


def _stager_pods(lab, ns: str) -> list:
    """Each stager pod's phase and log tail: what a failed concurrency check shows."""
    core = client.CoreV1Api(api(lab))
    out = []
    for pod in core.list_namespaced_pod(ns).items:
        try:
            log = core.read_namespaced_pod_log(pod.metadata.name, ns)[-800:]
        except client.ApiException as exc:
            log = f"(no log: {exc.status})"
        out.append((pod.metadata.name, pod.status.phase, log))
    return out


def test_concurrent_stagings_of_one_model_and_of_two_models_on_one_pvc(
        k8s_lab_factory, tmp_path, gated_web):
    lab = k8s_lab_factory()
    root, url, gate = gated_web
    manifest = {"files": [{"path": p, "size": (root / p).stat().st_size, "sha256": d}
                          for p, d in _digests(root).items()]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    runs = {"first": "m1", "same": "m1", "other": "m2"}
    results: dict = {}

    def _stage(run: str, model_dir: str) -> None:
        results[run] = run_module(lab, tmp_path / run, "model_stage", {
            "namespace": "both", "model_dir": model_dir, "timeout": 180,
            "pvc": {"name": "models", "storage_class": "nfs-csi", "size": "1Gi"},
            "source": {"type": "http", "url": url, "manifest": f"{url}/manifest.json"},
            "credentials": {"token": f"token-{run}"}})

    threads = []
    for run, model_dir in runs.items():
        (tmp_path / run).mkdir()
        threads.append(threading.Thread(target=_stage, args=(run, model_dir)))
        threads[-1].start()
    # every run's Job exists while the first transfers are held: they really overlap
    wait_for(lambda: len(_jobs_of(lab, "both", "m1")) == 2 and _jobs_of(lab, "both", "m2"),
             "three stager Jobs at once", timeout=240,
             context=lambda: str({r: v[2][-1500:] for r, v in results.items()}))
    gate.set()
    for thread in threads:
        thread.join(240)
    # every run ended (a run still waiting would leave its Job out of the reads below)
    assert sorted(results) == sorted(runs), _stager_pods(lab, "both")
    for run, (rc, _result, out) in results.items():
        assert rc == 0, (run, out[-3000:], _stager_pods(lab, "both"))
    # both Jobs of m1 ran to completion: neither run deleted the other's live Job
    assert [j.status.succeeded for j in _jobs_of(lab, "both", "m1")] == [1, 1]
    changed = sorted(results[r][1]["result"]["changed"] for r in ("first", "same"))
    assert changed == [False, True]  # the later one waited and found the model staged
    volume = _volume_dir(lab, "models", "both")
    expected = {k: v for k, v in _digests(root).items() if k != "manifest.json"}
    assert _digests(volume / "m1") == expected and _digests(volume / "m2") == expected
    pvc = client.CoreV1Api(api(lab)).read_namespaced_persistent_volume_claim("models", "both")
    assert set(json.loads(pvc.metadata.annotations["gpu-stack.llmops.io/staged"])) == {
        "m1", "m2"}
    assert _stager_secrets(lab, "both") == []


def test_a_signed_archive_url_never_reaches_the_job_env_nor_the_output(
        k8s_lab_factory, tmp_path, web_root):
    lab = k8s_lab_factory()
    root, url = web_root
    with tarfile.open(root / "m.tar", "w") as tar:
        for name in ("config.json", "sub/weights.bin"):
            tar.add(root / name, arcname=name)
    signed = f"{url}/m.tar?X-Amz-Signature=s1gn4ture-{tmp_path.name}"
    rc, _result, out = run_module(lab, tmp_path, "model_stage", {
        "namespace": "signed", "model_dir": "arch", "timeout": 300,
        "pvc": {"name": "models", "storage_class": "nfs-csi", "size": "1Gi"},
        "source": {"type": "archive", "url": signed}}, extra=("-vvv",), json_out=False)
    assert rc == 0, out[-3000:]
    assert "s1gn4ture" not in out
    (job,) = client.BatchV1Api(api(lab)).list_namespaced_job("signed").items
    env = job.spec.template.spec.containers[0].env
    assert "s1gn4ture" not in json.dumps(api(lab).sanitize_for_serialization(env))
    assert any(e.value_from and e.value_from.secret_key_ref for e in env)
    assert _stager_secrets(lab, "signed") == []
    published = _volume_dir(lab, "models", "signed") / "arch"
    assert (published / "sub" / "weights.bin").read_bytes() == (
        root / "sub" / "weights.bin").read_bytes()


def test_concurrent_role_runs_of_local_models_each_upload_their_own(k8s_lab_factory, tmp_path):
    lab = k8s_lab_factory()
    model = _model(tmp_path / "model")
    runs = {"a": "tiny", "b": "tiny", "c": "tiny2"}
    results: dict = {}

    def _run(run: str, model_dir: str) -> None:
        results[run] = _storage(lab, tmp_path / run, model, model_dir=model_dir)

    threads = []
    for run, model_dir in runs.items():
        (tmp_path / run).mkdir()
        threads.append(threading.Thread(target=_run, args=(run, model_dir)))
        threads[-1].start()
    for thread in threads:
        thread.join(600)
    for run, (rc, _tasks, out) in results.items():
        assert rc == 0, (run, out[-3000:])
    volume = _volume_dir(lab, "models", "llm")
    assert _digests(volume / "tiny") == _digests(model)
    assert _digests(volume / "tiny2") == _digests(model)
    pvc = client.CoreV1Api(api(lab)).read_namespaced_persistent_volume_claim("models", "llm")
    assert set(json.loads(pvc.metadata.annotations["gpu-stack.llmops.io/staged"])) == {
        "tiny", "tiny2"}
    # each run had its own loader pod and upload directory, and left neither behind
    assert client.CoreV1Api(api(lab)).list_namespaced_pod(
        "llm", label_selector="app.kubernetes.io/component=model-loader").items == []
    uploads = volume / ".gpu-stack-staging"
    assert [p for p in uploads.rglob("*") if p.is_file() and p.suffix != ".lock"] == []


def _damage(path: Path) -> None:
    """Same-size damage that keeps the mtime: what size and mtime cannot see."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_same_size_damage_found_by_verify_digests_and_repaired(k8s_lab_factory, tmp_path,
                                                               web_root):
    lab = k8s_lab_factory()
    root, url = web_root
    manifest = {"files": [{"path": p, "size": (root / p).stat().st_size, "sha256": d}
                          for p, d in _digests(root).items()]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    args = {"namespace": "dmg", "model_dir": "m", "timeout": 300,
            "pvc": {"name": "models", "storage_class": "nfs-csi", "size": "1Gi"},
            "source": {"type": "http", "url": url, "manifest": f"{url}/manifest.json"}}
    rc, _result, out = run_module(lab, tmp_path, "model_stage", args)
    assert rc == 0, out[-3000:]
    published = _volume_dir(lab, "models", "dmg") / "m"
    _damage(published / "sub" / "weights.bin")
    rc, blind, out = run_module(lab, tmp_path, "model_stage", args)
    assert rc == 0 and blind["changed"] is False, out[-3000:]  # stat alone cannot see it
    rc, fixed, out = run_module(lab, tmp_path, "model_stage", {**args, "verify": "digests"})
    assert rc == 0, out[-3000:]
    assert fixed["changed"] and fixed["result"]["stale_files"] == ["sub/weights.bin"]
    assert _digests(published) == {k: v for k, v in _digests(root).items()
                                   if k != "manifest.json"}


def test_a_damaged_local_model_is_repaired_by_the_role_with_verify_digests(k8s_lab_factory,
                                                                           tmp_path):
    lab = k8s_lab_factory()
    model = _model(tmp_path / "model")
    rc, _tasks, out = _storage(lab, tmp_path, model)
    assert rc == 0, out[-3000:]
    published = _volume_dir(lab, "models", "llm") / "tiny"
    _damage(published / "sub" / "weights.bin")
    rc, _tasks, out = _storage(lab, tmp_path, model, "-e", "model_storage_integrity=digests")
    assert rc == 0, out[-3000:]
    assert "Upload the model files" in out  # uploaded again: the repair needs the bytes
    assert "(was: stale files)" in " ".join(out.split())
    assert _digests(published) == _digests(model)
