"""The collection as a site installs it: built, installed from the tarball, run from there.

- The collection is built (``ansible-galaxy collection build``) from the files git knows
  (what a clean clone holds) and the tarball installed into an EMPTY collections path.
- ``site.yml`` runs FROM THE INSTALLED COPY (``ansible-playbook llmops.gpu_stack.site``,
  the inventory too is the installed copy's) against a lab of its own, with
  ``ANSIBLE_COLLECTIONS_PATH`` holding only the installed path and the ``ansible``
  package's bundled collections (kubernetes.core), from a directory without this
  repository's ansible.cfg: the repository's collections link is nowhere on the path.
  What it did is read back from the lab's API server and the validate stage's report.
- A FRESH venv with only ansible-core and ``pip install -r requirements.txt`` (the
  installed copy's file) is enough to run every module's ``ansible-doc`` and a
  check-mode ``site.yml`` from the installed copy against that lab. The lab itself is
  test infrastructure the fresh venv does not hold: its start-up play is turned off
  there (``gpu_stack_lab=false``: the lab is running already, started by the first run).

The fresh venv's ``pip install`` (about 400 MB: kubernetes, openai, matplotlib...) runs
in the background while site.yml runs, so it adds little to the test's wall time. Two
runs on the shared 2-core machine (other lab tests running): 604 s and 370 s in all, of
which the real site.yml (lab start included) 521 s / 262 s and the check-mode run 68 s /
96 s.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py")
                 if p.stem != "__init__")
# the ansible package's bundled collections (kubernetes.core...) of the venv running this
BUNDLED = Path(sysconfig.get_paths()["purelib"])


def _ansible_core_pin() -> str:
    groups = tomllib.loads((REPO / "pyproject.toml").read_text())["dependency-groups"]
    (pin,) = [d for d in groups["dev"] if d.startswith("ansible-core==")]
    return pin


def _env(home: Path, colls: Path, lab_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANSIBLE_", "K8S_AUTH_", "VMWARE_", "PYTHONPATH"))}
    env.update(ANSIBLE_COLLECTIONS_PATH=os.pathsep.join([str(colls), str(BUNDLED)]),
               ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False", ANSIBLE_HOME=str(home),
               ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               GPU_LAB_HOME=str(lab_home))
    return env


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("installed")


@pytest.fixture(scope="module")
def installed(work) -> Path:
    """An empty collections path with the built tarball installed into it."""
    src = work / "src"
    src.mkdir()
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout
    subprocess.run(["tar", "--null", "-T", "-", "-cf", str(work / "src.tar")], cwd=REPO,
                   input=files, check=True, capture_output=True)
    subprocess.run(["tar", "-xf", str(work / "src.tar"), "-C", str(src)], check=True)
    colls = work / "collections"
    colls.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_HOME=str(work / "home"), ANSIBLE_NOCOLOR="1")
    galaxy = str(BIN / "ansible-galaxy")
    for cmd in ([galaxy, "collection", "build", "--output-path", str(work), str(src)],
                [galaxy, "collection", "install", "--no-deps", "-p", str(colls)]):
        if cmd[2] == "install":
            (tarball,) = work.glob("llmops-gpu_stack-*.tar.gz")
            cmd.append(str(tarball))
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    # nothing but the one collection, and it is a copy, not a link to the repository
    assert [str(p.relative_to(colls)) for p in colls.glob("ansible_collections/*/*")] == [
        "ansible_collections/llmops/gpu_stack"]
    root = colls / "ansible_collections" / "llmops" / "gpu_stack"
    assert not root.is_symlink() and (root / "MANIFEST.json").is_file()
    return colls


@pytest.fixture(scope="module")
def _venv_job(work, installed):
    """Start creating the fresh venv in the background (see the module's docstring)."""
    venv = work / "venv"
    requirements = installed / "ansible_collections/llmops/gpu_stack/requirements.txt"
    # (a venv made by a venv's Python is based on the base interpreter, not on the venv)
    script = (f'"{sys.executable}" -m venv "{venv}" && '
              f'"{venv}/bin/python" -m pip install -q --no-compile "{_ansible_core_pin()}" '
              f'-r "{requirements}"')
    log = (work / "venv.log").open("w")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    proc = subprocess.Popen(["bash", "-c", script], stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    yield venv, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def fresh_venv(_venv_job, work) -> Path:
    venv, proc = _venv_job
    assert proc.wait(timeout=900) == 0, (work / "venv.log").read_text()[-4000:]
    return venv


@pytest.fixture(scope="module")
def site_run(work, installed, _venv_job):
    """site.yml from the installed copy, with this venv's Ansible (it holds the lab)."""
    lab_home = work / "lab"
    env = _env(work / "home", installed, lab_home)
    inventory = installed / "ansible_collections/llmops/gpu_stack/inventories/lab"
    try:
        done = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory),
                               "llmops.gpu_stack.site"], capture_output=True, text=True,
                              cwd=work, env=env, timeout=1800, check=False)
        yield lab_home, inventory, done
    finally:
        subprocess.run([str(BIN / "gpu-lab"), "down"], env=env, capture_output=True,
                       timeout=300, check=False)


def _stats(stdout: str) -> dict:
    return json.loads(stdout)["stats"]["localhost"]


def test_installed_modules_resolve_from_the_installed_copy_only(work, installed):
    env = _env(work / "home", installed, work / "lab")
    done = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "list",
                           "llmops.gpu_stack", "--format", "json"], capture_output=True,
                          text=True, cwd=work, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert list(found) == [str(installed / "ansible_collections")], found


def test_site_yml_from_the_installed_copy_serves_the_model(site_run):
    lab_home, _inventory, done = site_run
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert _stats(done.stdout)["failures"] == 0
    # read back from the lab's API server, not from the playbook's output
    from kubernetes import client, config

    api = config.new_client_from_config(str(lab_home / "kubeconfig"), context="lab-admin")
    custom = client.CustomObjectsApi(api)
    clusters = custom.list_namespaced_custom_object("ray.io", "v1", "llm",
                                                    "rayclusters")["items"]
    assert clusters and all(c["status"].get("readyWorkerReplicas") == 2 for c in clusters)
    core = client.CoreV1Api(api)
    handover = core.read_namespaced_config_map("llm-endpoint", "llm").data
    assert handover, "no hand-over ConfigMap llm-endpoint"
    assert base64.b64decode(core.read_namespaced_secret("llm-api-key", "llm").data["api-key"])
    # the validate stage's load test really ran against the endpoint
    report = json.loads((lab_home / "validate" / "load-test.json").read_text())
    assert report["results"] and all(r["ok"] for r in report["results"])


def test_fresh_venv_runs_every_modules_ansible_doc(work, installed, fresh_venv):
    env = _env(work / "home", installed, work / "lab")
    # the fresh venv holds none of the development venv: no lab, no Ray, no vLLM
    for absent in ("gpu_lab", "ray", "vllm", "ansible_collections.kubernetes"):
        probe = subprocess.run([str(fresh_venv / "bin" / "python"), "-c", f"import {absent}"],
                               capture_output=True, cwd=work, check=False)
        assert probe.returncode != 0, f"{absent} is importable in the fresh venv"
    done = subprocess.run([str(fresh_venv / "bin" / "ansible-doc"), "--json",
                           *(f"llmops.gpu_stack.{m}" for m in MODULES)],
                          capture_output=True, text=True, cwd=work, env=env, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    docs = json.loads(done.stdout)
    assert sorted(docs) == sorted(f"llmops.gpu_stack.{m}" for m in MODULES)
    for name, doc in docs.items():
        assert doc["doc"]["filename"].startswith(str(installed)), (name, doc["doc"]["filename"])
        assert doc["doc"]["options"] is not None


def test_fresh_venv_runs_site_yml_in_check_mode(work, installed, fresh_venv, site_run):
    lab_home, inventory, first = site_run
    assert first.returncode == 0, "the real run failed (see its test)"
    env = _env(work / "home", installed, lab_home)
    # the modules run in the fresh venv's Python (the inventory's interpreter is the one
    # running ansible-playbook); the lab's own start-up play needs the lab's tools
    done = subprocess.run([str(fresh_venv / "bin" / "ansible-playbook"), "-i", str(inventory),
                           "llmops.gpu_stack.site", "--check", "-e", "gpu_stack_lab=false"],
                          capture_output=True, text=True, cwd=work, env=env, timeout=1200,
                          check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    stats = _stats(done.stdout)
    # after the real run nothing is left to change: check mode predicts no change at all
    assert stats["failures"] == 0 and stats["ok"] > 0 and stats["changed"] == 0, stats
    print(f"\ncheck-mode site.yml from the fresh venv: {stats}")
