"""The model_storage role stages every model of the inventory's list (gpu_stack_models),
each into its own directory of the one claim, against the shared lab: the files are read
back from the volume's directory and the claim's record; a check-mode rerun with a third
model finds the two staged ones unchanged and writes nothing for the third. (http sources:
the local upload path per model is the one-model path, tested in test_model_stage.py.)"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest
from kubernetes import client

from .k8s_helpers import api, run_play

pytestmark = [pytest.mark.lab]

NS = "h17-models"


def _model(root: Path, seed: int) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "seed": seed}))
    (root / "weights.bin").write_bytes(bytes([seed]) * 4096)
    return root


def _digests(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".gpu")}


def _claim(lab):
    return client.CoreV1Api(api(lab)).read_namespaced_persistent_volume_claim("models", NS)


def _volume_dir(lab) -> Path:
    core = client.CoreV1Api(api(lab))
    pv = core.read_persistent_volume(_claim(lab).spec.volume_name)
    return Path(pv.metadata.annotations["gpu-lab.llmops.io/local-path"])


def _stage(lab, tmp_path: Path, models: list, *extra):
    tasks = [
        {"name": "Stage the list", "ansible.builtin.include_role": {
            "name": "llmops.gpu_stack.model_storage"}},
        {"name": "Where each model is", "ansible.builtin.debug": {"var": "model_storage_staged"}},
    ]
    return run_play(lab, tmp_path, tasks, extra=extra, vars_file={
        "gpu_stack_k8s_auth": {"kubeconfig": str(lab.kubeconfig)},
        "model_storage_namespace": NS,
        "model_storage_pvc": {"name": "models", "storage_class": "nfs-csi", "size": "1Gi"},
        "model_storage_image": "registry.example.com/llmops/gpu-stack-runtime:0.1.0",
        # the planner's keys of an entry ride along, unused by this role
        "gpu_stack_models": models})


@pytest.fixture
def web_models(tmp_path):
    """Three small models behind one local HTTP server, each with its manifest."""
    root = tmp_path / "www"
    for seed in (1, 2, 3):
        model = _model(root / f"m{seed}", seed)
        files = [{"path": p, "size": (model / p).stat().st_size, "sha256": d}
                 for p, d in _digests(model).items()]
        (model / "manifest.json").write_text(json.dumps({"files": files}))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    sources = [{"type": "http", "url": f"{url}/m{seed}", "manifest": f"{url}/m{seed}/manifest.json"}
               for seed in (1, 2, 3)]
    yield root, sources
    server.shutdown()


def test_two_models_each_in_its_own_directory_then_a_check_run(k8s_lab, tmp_path, web_models):
    lab = k8s_lab
    root, sources = web_models
    models = [
        {"name": "tiny-llama", "source": sources[0], "model": {"preset": "llama-3-8b"},
         "backend": "ray"},
        {"name": "tiny-qwen", "model_dir": "qwen-weights", "replicas": 1, "source": sources[1]},
    ]
    run = _stage(lab, tmp_path, models)
    assert run.rc == 0, run.output[-3000:]
    volume = _volume_dir(lab)
    expected = {name: {k: v for k, v in _digests(root / name).items() if k != "manifest.json"}
                for name in ("m1", "m2")}
    assert _digests(volume / "tiny-llama") == expected["m1"]
    assert _digests(volume / "qwen-weights") == expected["m2"]
    assert set(json.loads(_claim(lab).metadata.annotations["gpu-stack.llmops.io/staged"])) == {
        "tiny-llama", "qwen-weights"}
    staged = run.results[-1]["model_storage_staged"]
    assert [(s["name"], s["model_dir"], s["pvc"], s["changed"]) for s in staged] == [
        ("tiny-llama", "tiny-llama", "models", True), ("tiny-qwen", "qwen-weights", "models", True)]

    # check mode with a third model: the two staged ones need nothing, the third would be
    # staged, and nothing is written for it
    more = [*models, {"name": "third", "source": sources[2]}]
    run = _stage(lab, tmp_path, more, "--check")
    assert run.rc == 0, run.output[-3000:]
    assert [s["changed"] for s in run.results[-1]["model_storage_staged"]] == [False, False, True]
    assert not (volume / "third").exists()
    assert "third" not in json.loads(_claim(lab).metadata.annotations[
        "gpu-stack.llmops.io/staged"])
