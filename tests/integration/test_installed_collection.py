"""The collection as a site installs it and as AWX runs it, against one lab.

- The collection is built (``ansible-galaxy collection build``) from the files git knows
  (what a clean clone holds) and the tarball installed into an EMPTY collections path.
- AWX / Automation Controller, as ansible-runner (the engine AWX uses) runs it: a private
  data directory laid out as AWX lays it - ``project/`` (the checkout), a simulated
  project sync (``ansible-galaxy collection install -r collections/requirements.yml -p
  requirements_collections``, from the project's root, offline: the dependencies come
  from the execution environment's collections, this one from the checkout itself),
  ``inventory/`` (the project's inventory, as the inventory source imports it),
  ``env/extravars`` (the survey's answers and the job template's extra vars, from
  playbooks/awx/vars/controller.yml rendered by Ansible), ``env/envvars`` (the
  credentials' injectors: the custom types' from the same file, the built-in vCenter and
  bearer-token types' as AWX defines them), ``env/cmdline`` (--diff), ``artifacts/``.
  The site workflow's job templates, in the workflow's order, converge the lab from
  scratch, with the cluster from K8S_AUTH_* (gpu_stack_k8s_auth emptied) and vCenter's
  host and secrets from VMWARE_*; the validate job's artifacts hold its summary.
- ``site.yml`` then runs FROM THE INSTALLED COPY (``ansible-playbook
  llmops.gpu_stack.site``, the inventory too is the installed copy's) against the same
  lab and changes nothing (the jobs left nothing to do), with ``ANSIBLE_COLLECTIONS_PATH``
  holding only the installed path and the ``ansible`` package's bundled collections
  (kubernetes.core), from a directory without this repository's ansible.cfg: the
  repository's collections link is nowhere on the path. What it did is read back from
  the lab's API server and the validate stage's report.
- A FRESH venv with only ansible-core and ``pip install -r requirements.txt`` (the
  installed copy's file) is enough to run every module's ``ansible-doc`` and a
  check-mode ``site.yml`` from the installed copy against that lab. The lab itself is
  test infrastructure the fresh venv does not hold: its start-up play is turned off
  there (``gpu_stack_lab=false``: the lab is running already, started by the first run).

The fresh venv's ``pip install`` (about 400 MB: kubernetes, openai, matplotlib...) runs
in the background while the lab converges, so it adds little to the test's wall time.
Before the AWX jobs were added, two runs on the shared 2-core machine took 604 s and
370 s in all (site.yml from scratch 521 s / 262 s, the check-mode run 68 s / 96 s);
the AWX jobs now converge the lab from scratch in site.yml's place, and site.yml's run
becomes a second, unchanging one: 525 s in all on the same machine (lab start, project
sync and the six jobs 305 s, site.yml again 106 s, the check-mode run 99 s). The whole
workflow was launched a second time too (about 250 s); now only the jobs fed by
credential injectors are (``RELAUNCHED``), site.yml's rerun covering the rest.
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

import openai
import pytest
import yaml
from unit.awx.controller import VAULT

from . import awx_runner, gateway_clients

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
def lab(work, installed, _venv_job):
    """The lab, started by the installed copy's stage 0 (lab.yml); stopped at the end."""
    lab_home = work / "lab"
    env = _env(work / "home", installed, lab_home)
    inventory = installed / "ansible_collections/llmops/gpu_stack/inventories/lab"
    try:
        done = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory),
                               "llmops.gpu_stack.lab"], capture_output=True, text=True,
                              cwd=work, env=env, timeout=900, check=False)
        assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
        yield lab_home, inventory
    finally:
        subprocess.run([str(BIN / "gpu-lab"), "down"], env=env, capture_output=True,
                       timeout=300, check=False)


def _lab_credentials(lab_home: Path) -> tuple[dict[str, dict], dict]:
    """The lab's vCenter and cluster as credential inputs (by credential type)."""
    vsphere = json.loads((lab_home / "vsphere.json").read_text())
    kubeconfig = yaml.safe_load((lab_home / "kubeconfig").read_text())
    (context,) = [c["context"] for c in kubeconfig["contexts"] if c["name"] == "lab-admin"]
    (cluster,) = [c["cluster"] for c in kubeconfig["clusters"]
                  if c["name"] == context["cluster"]]
    (user,) = [u["user"] for u in kubeconfig["users"] if u["name"] == context["user"]]
    return {
        "VMware vCenter": {"host": vsphere["hostname"], "username": vsphere["username"],
                           "password": vsphere["password"]},
        "OpenShift or Kubernetes API Bearer Token": {
            "host": cluster["server"], "bearer_token": user["token"], "verify_ssl": True,
            "ssl_ca_cert": base64.b64decode(cluster["certificate-authority-data"]).decode()},
        # the LLM API key is the placeholder vault's; the lab needs no Hub token nor S3
    }, vsphere


@pytest.fixture(scope="module")
def awx_jobs(work, lab):
    """The site workflow's job templates, in its order, as AWX runs them (module doc)."""
    lab_home, _inventory = lab
    pdd = work / "awx"
    tools = _tools(work, lab_home)
    colls = awx_runner.project_sync(work / "src.tar", pdd, tools)
    awx_runner.write_inventory(pdd, pdd / "project/inventories/lab", tools)
    return lab_home, colls, _workflow(pdd, colls, tools, lab_home, "")


# Launched again: the jobs whose inputs come from AWX credentials' injectors (vCenter from
# VMWARE_*, the LLM API key from extra vars) - a second launch must find nothing to do
# with the same injected values. That every stage changes nothing on a second run is
# site.yml's rerun below (site_run).
RELAUNCHED = ("esxi", "serving")


@pytest.fixture(scope="module")
def awx_rerun(awx_jobs, work):
    """The credential-fed job templates launched again after the workflow converged."""
    lab_home, colls, _jobs = awx_jobs
    tools = _tools(work, lab_home)
    return _workflow(work / "awx", colls, tools, lab_home, "-again", only=RELAUNCHED)


def _tools(work: Path, lab_home: Path) -> dict:
    """What the jobs run with: this venv's ansible-runner and Ansible, the execution
    environment's collections (the ansible package's bundled ones)."""
    env = _env(work / "home", Path("/nonexistent"), lab_home)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["ANSIBLE_COLLECTIONS_PATH"] = str(BUNDLED)
    return {"GALAXY": str(BIN / "ansible-galaxy"), "INVENTORY": str(BIN / "ansible-inventory"),
            "RUNNER": str(BIN / "ansible-runner"), "ENV": env}


def _workflow(pdd: Path, colls: Path, tools: dict, lab_home: Path, suffix: str,
              only: tuple = ()) -> dict:
    """Each job template of the site workflow in order (``only``: just those), stopping
    at the first failure."""
    conf = awx_runner.configuration()
    inputs, vsphere = _lab_credentials(lab_home)
    jobs = {}
    for template in conf["order"]:
        key = Path(template["playbook"]).stem
        if only and key not in only:
            continue
        # the survey's defaults but the GPU nodes: the lab serves on 3 of its 8
        extravars = awx_runner.survey_answers(template, {"serving_plan_max_nodes": 3})
        # the lab serves the two tiny models it generates (its gpu_stack_models), which
        # no preset describes
        extravars.update({k: v for k, v in template["extra_vars"].items()
                          if k not in ("serving_plan_model", "ray_vllm_served_model_name")})
        envvars, injected_vars = awx_runner.injected(template, conf, inputs, pdd)
        extravars.update(injected_vars)
        # the cluster from K8S_AUTH_* alone: the lab inventory's kubeconfig set aside
        extravars["gpu_stack_k8s_auth"] = {}
        if key == "esxi":
            # vCenter's host, user and password from VMWARE_*: the inventory keeps only
            # where the lab's simulator listens and the CA it uses
            extravars["esxi_gpu_passthrough_vcenter"] = {
                k: vsphere[k] for k in ("port", "validate_certs", "ca_path")}
        if key == "validate":
            extravars["validate_report_dir"] = ""  # the default: the job's artifacts
        envvars["ANSIBLE_COLLECTIONS_PATH"] = os.pathsep.join([str(colls), str(BUNDLED)])
        jobs[key] = awx_runner.run_job(pdd, key + suffix, template, extravars, envvars, tools)
        if jobs[key]["status"] != "successful":
            break
    return jobs


@pytest.fixture(scope="module")
def site_run(work, installed, lab, awx_jobs, awx_rerun):
    """site.yml from the installed copy, with this venv's Ansible, after the AWX jobs."""
    lab_home, inventory = lab
    env = _env(work / "home", installed, lab_home)
    done = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory),
                           "llmops.gpu_stack.site"], capture_output=True, text=True,
                          cwd=work, env=env, timeout=1800, check=False)
    return lab_home, inventory, done


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


def _serving_read_back(lab_home: Path) -> dict:
    """The lab's API server says both models are served (not the playbook's output):
    tiny-llama as a RayCluster, tiny-qwen as a Ready InferenceService, each with its
    hand-over."""
    from kubernetes import client, config

    api = config.new_client_from_config(str(lab_home / "kubeconfig"), context="lab-admin")
    custom = client.CustomObjectsApi(api)
    clusters = custom.list_namespaced_custom_object("ray.io", "v1", "llm",
                                                    "rayclusters")["items"]
    assert [c["metadata"]["name"] for c in clusters] == ["tiny-llama-0"], clusters
    assert all(c["status"].get("readyWorkerReplicas") == 2 for c in clusters)
    isvcs = custom.list_namespaced_custom_object("serving.kserve.io", "v1beta1", "llm",
                                                 "inferenceservices")["items"]
    assert [i["metadata"]["name"] for i in isvcs] == ["tiny-qwen-0"], isvcs
    ready = {c["type"]: c["status"] for c in isvcs[0]["status"]["conditions"]}
    assert ready["Ready"] == "True", isvcs[0]["status"]
    core = client.CoreV1Api(api)
    handovers = {name: core.read_namespaced_config_map(f"{name}-endpoint", "llm").data
                 for name in ("tiny-llama", "tiny-qwen")}
    assert all(handovers.values()), handovers
    assert handovers["tiny-qwen"]["backend"] == "kserve", handovers
    key = base64.b64decode(core.read_namespaced_secret("tiny-llama-api-key", "llm")
                           .data["api-key"])
    return {"handover": handovers["tiny-llama"], "api_key": key.decode()}


def test_awx_project_sync_installs_the_checkout_and_nothing_else(awx_jobs):
    _lab_home, colls, _jobs = awx_jobs
    # the dependencies are the execution environment's; the checkout is copied, not linked
    assert [str(p.relative_to(colls)) for p in colls.glob("ansible_collections/*/*")] == [
        "ansible_collections/llmops/gpu_stack"]
    root = colls / "ansible_collections/llmops/gpu_stack"
    assert not root.is_symlink() and (root / "MANIFEST.json").is_file()
    assert (root / "roles/validate/tasks/main.yml").read_bytes() == \
        (REPO / "roles/validate/tasks/main.yml").read_bytes()


# the site workflow's job templates, in playbooks/site.yml's order
SITE_JOBS = ["esxi", "openshift", "plan", "storage", "serving", "gateway", "monitoring", "validate"]


def test_awx_site_workflow_converges_the_lab(awx_jobs):
    lab_home, _colls, jobs = awx_jobs
    assert list(jobs) == SITE_JOBS
    for key, job in jobs.items():
        assert job["status"] == "successful", (key, job["output"])
        assert not any(job["stats"].get("failures", {}).values()), (key, job["stats"])
    # from scratch: passthrough, operators, storage and serving were all changed
    for key in ("esxi", "openshift", "storage", "serving", "gateway", "monitoring"):
        assert job_changed(jobs[key]), (key, jobs[key]["stats"])
    served = _serving_read_back(lab_home)
    # the LLM API key credential's extra_vars injector reached the serving stage
    assert served["api_key"] == VAULT["vault_llm_api_key"]


def job_changed(job: dict) -> bool:
    return any(job["stats"].get("changed", {}).values())


def test_awx_credential_fed_jobs_launched_again_change_nothing(awx_rerun):
    assert list(awx_rerun) == list(RELAUNCHED)
    for key, job in awx_rerun.items():
        assert job["status"] == "successful", (key, job["output"])
        assert not job_changed(job), (key, job["changed_tasks"], job["stats"])


def test_awx_validate_job_artifacts_hold_the_summary(awx_jobs):
    lab_home, _colls, jobs = awx_jobs
    job = jobs["validate"]
    assert job["status"] == "successful", job["output"]
    summary = job["stats"]["artifact_data"]["validate_summary"]
    # ansible-runner's stats event as AWX stores it with the job (set_stats)
    assert summary["validated"] is True and summary["smoke_failed"] == [], summary
    assert summary["load_test"]["counts"]["ok"] == 20, summary  # the survey's default
    # the files went into the job's artifact directory, and say the same as the summary
    assert summary["report"] == str(job["artifacts"] / "validate" / "load-test.json")
    report = json.loads((job["artifacts"] / "validate" / "load-test.json").read_text())
    assert len(report["results"]) == 20 and all(r["ok"] for r in report["results"])
    assert report["counts"] == summary["load_test"]["counts"]
    assert (job["artifacts"] / "validate" / "load-test.png").stat().st_size > 0
    # the model it validated is the one the serving stage recorded on the cluster
    handover = _serving_read_back(lab_home)["handover"]
    assert summary["model"] and summary["model"] in handover.values(), (summary, handover)


def test_site_yml_from_the_installed_copy_changes_nothing_and_serves(site_run):
    lab_home, _inventory, done = site_run
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    stats = _stats(done.stdout)
    # the AWX jobs converged the lab: the whole site.yml finds nothing to change
    changed = [task["task"]["name"] for play in json.loads(done.stdout)["plays"]
               for task in play["tasks"] if task["hosts"].get("localhost", {}).get("changed")]
    assert stats["failures"] == 0 and stats["changed"] == 0, (stats, changed)
    _serving_read_back(lab_home)
    # the validate stage's load test really ran against the endpoint
    report = json.loads((lab_home / "validate" / "load-test.json").read_text())
    assert report["results"] and all(r["ok"] for r in report["results"])


def test_the_sites_gateway_serves_both_models_to_the_openai_and_litellm_clients(site_run):
    """Through the gateway of the converged lab, by model name: the ``openai`` SDK gets a
    completion, a chat and a streamed chat from each model, ``litellm`` a streamed chat;
    an unknown name is a 400 that names it."""
    from kubernetes import client, config

    lab_home, _inventory, done = site_run
    assert done.returncode == 0, "the run failed (see its test)"
    api = config.new_client_from_config(str(lab_home / "kubeconfig"), context="lab-admin")
    core = client.CoreV1Api(api)
    handover = core.read_namespaced_config_map("llm-gateway-endpoint", "llm").data
    key = base64.b64decode(core.read_namespaced_secret(handover["master_key_secret"], "llm")
                           .data["master-key"]).decode()
    router = json.loads((lab_home / "router.json").read_text())
    host = handover["endpoint"].removeprefix("https://")
    llm = gateway_clients.openai_client(router["url"], router["ca"], host, key)
    assert sorted(m.id for m in llm.models.list()) == ["tiny-llama", "tiny-qwen"]
    for model in ("tiny-llama", "tiny-qwen"):
        got = gateway_clients.openai_answers(llm, model)
        assert got["completion_model"] == got["chat_model"] == model, got
        assert got["completion_tokens"] > 0 and got["chat_tokens"] > 0, got
        assert got["stream_chunks"] > 2 and got["stream_text"], got
        if gateway_clients.GATEWAY_PYTHON.exists():
            chunks, text = gateway_clients.litellm_stream(router["url"], router["ca"], host,
                                                          key, model)
            assert chunks > 2 and text, (model, chunks, text)
    with pytest.raises(openai.BadRequestError, match="no-such-model"):
        llm.chat.completions.create(model="no-such-model", max_tokens=2,
                                    messages=[{"role": "user", "content": "Hi"}])


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
