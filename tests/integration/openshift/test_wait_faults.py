"""Waits end early with the pod's reason: model_stage's stager Job against the lab when
its image cannot be pulled and when no node can take its pod; once the fault is cleared a
rerun converges, and a third run changes nothing. Independent reads: the lab's events,
the files on the volume and the PVC's record."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client

from .k8s_helpers import api, run_module

pytestmark = [pytest.mark.lab, pytest.mark.slow]

GOOD_IMAGE = "registry.example.com/llmops/gpu-stack-runtime:0.1.0"
BAD_IMAGE = "registry.invalid/llmops/gpu-stack-runtime:0.1.0"


@pytest.fixture(scope="module")
def lab(k8s_lab_factory):
    return k8s_lab_factory(workers=2)


@pytest.fixture
def web(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (root / "weights.bin").write_bytes(bytes(range(256)) * 400)
    files = [{"path": p.name, "size": p.stat().st_size,
              "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in root.iterdir()]
    (root / "manifest.json").write_text(json.dumps({"files": files}))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _args(url: str, ns: str, image: str) -> dict:
    return {"namespace": ns, "model_dir": "m", "image": image, "timeout": 3600,
            "pvc": {"name": "models", "storage_class": "nfs-csi", "size": "1Gi"},
            "source": {"type": "http", "url": url, "manifest": f"{url}/manifest.json"}}


def _staged(lab, ns: str) -> set:
    core = client.CoreV1Api(api(lab))
    pv = core.read_persistent_volume(core.read_namespaced_persistent_volume_claim(
        "models", ns).spec.volume_name)
    root = Path(pv.metadata.annotations["gpu-lab.llmops.io/local-path"]) / "m"
    return {p.name for p in root.iterdir() if not p.name.startswith(".")} if root.is_dir() \
        else set()


def _events(lab, ns: str, reason: str) -> list:
    core = client.CoreV1Api(api(lab))
    return [e.message for e in core.list_namespaced_event(ns).items if e.reason == reason]


def _timed(lab, tmp_path, args):
    started = time.monotonic()
    rc, result, out = run_module(lab, tmp_path, "model_stage", args)
    return rc, result, out, time.monotonic() - started


def test_an_unpullable_stager_image_ends_the_wait_within_a_minute(lab, tmp_path, web):
    _root, url = web
    rc, result, out, took = _timed(lab, tmp_path, _args(url, "pull", BAD_IMAGE))
    assert rc != 0, out[-3000:]
    assert took < 60, f"took {took:.0f}s"
    msg = result["msg"]
    assert "cannot become ready: ImagePullBackOff (container stager)" in msg, msg
    assert f'Back-off pulling image "{BAD_IMAGE}"' in msg
    assert result["reason"] == "ImagePullBackOff"
    # the kubelet really failed the pull (read from the lab, not from the module)
    assert any(BAD_IMAGE in m and "no such host" in m for m in _events(lab, "pull", "Failed"))
    assert _staged(lab, "pull") == set()

    rc, result, out, _took = _timed(lab, tmp_path, _args(url, "pull", GOOD_IMAGE))
    assert rc == 0, out[-3000:]
    assert result["changed"] is True and _staged(lab, "pull") == {"config.json", "weights.bin"}
    _converged(lab, tmp_path, _args(url, "pull", GOOD_IMAGE))


def _converged(lab, tmp_path, args) -> None:
    """One more run changes nothing: the model is recorded on the PVC and left as it is."""
    ns = args["namespace"]
    core = client.CoreV1Api(api(lab))
    record = core.read_namespaced_persistent_volume_claim("models", ns).metadata.annotations
    rc, result, out, _took = _timed(lab, tmp_path, args)
    assert rc == 0 and result["changed"] is False, out[-3000:]
    assert core.read_namespaced_persistent_volume_claim(
        "models", ns).metadata.annotations == record
    assert _staged(lab, ns) == {"config.json", "weights.bin"}


def _cordon(lab, on: bool) -> None:
    core = client.CoreV1Api(api(lab))
    for node in core.list_node().items:
        core.patch_node(node.metadata.name, {"spec": {"unschedulable": on}})


def test_a_pod_no_node_takes_ends_the_wait_with_the_schedulers_message(lab, tmp_path, web):
    _root, url = web
    _cordon(lab, True)
    try:
        rc, result, out, took = _timed(lab, tmp_path, _args(url, "sched", GOOD_IMAGE))
    finally:
        _cordon(lab, False)
    assert rc != 0, out[-3000:]
    assert took < 60, f"took {took:.0f}s"
    msg = result["msg"]
    assert "cannot become ready: Unschedulable: 0/" in msg, msg
    assert "node(s) were unschedulable" in msg and result["reason"] == "Unschedulable"
    # the scheduler said so itself
    assert any("node(s) were unschedulable" in m for m in _events(lab, "sched",
                                                                  "FailedScheduling"))

    rc, result, out, _took = _timed(lab, tmp_path, _args(url, "sched", GOOD_IMAGE))
    assert rc == 0, out[-3000:]
    assert result["changed"] is True and _staged(lab, "sched") == {"config.json", "weights.bin"}
    _converged(lab, tmp_path, _args(url, "sched", GOOD_IMAGE))
