"""AWX jobs as ansible-runner runs them: a private data directory laid out as AWX lays it.

What AWX would take from its database comes from the controller configuration as Ansible
renders it (playbooks/awx/configure.yml with vars/controller.yml, through
tests/unit/awx/controller.py): the job templates and their surveys, the workflow's order,
the credentials each template uses and the custom credential types' injectors. Only the
built-in credential types' injectors are written here, as AWX defines them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jinja2
import yaml
from unit.awx.controller import render, tasks_of

# AWX's built-in types (awx/main/models/credential/__init__.py); the CA is written to a
# file whose path the injector sets, as AWX does with its tower.filename.
BUILTIN_INJECTORS = {
    "VMware vCenter": {"VMWARE_HOST": "{{ host }}", "VMWARE_USER": "{{ username }}",
                       "VMWARE_PASSWORD": "{{ password }}"},
    "OpenShift or Kubernetes API Bearer Token": {
        "K8S_AUTH_HOST": "{{ host }}", "K8S_AUTH_API_KEY": "{{ bearer_token }}",
        "K8S_AUTH_VERIFY_SSL": "{{ verify_ssl }}", "K8S_AUTH_SSL_CA_CERT": "{{ ca_file }}"},
}


def configuration() -> dict:
    """The rendered controller configuration: job templates in workflow order, creds."""
    rendered = render()
    templates = {t["name"]: t for t in tasks_of(rendered, "awx.awx.job_template")}
    (workflow,) = tasks_of(rendered, "awx.awx.workflow_job_template")
    nodes = {n["identifier"]: n for n in workflow["workflow_nodes"]
             if n.get("state", "present") == "present"}
    targets = {s["identifier"] for n in nodes.values()
               for s in n.get("related", {}).get("success_nodes", [])}
    (node,) = [n for key, n in nodes.items() if key not in targets]  # the first node
    order = []
    while node:
        order.append(templates[node["unified_job_template"]["name"]])
        following = node.get("related", {}).get("success_nodes", [])
        assert len(following) <= 1, "the site workflow is a chain"
        node = nodes[following[0]["identifier"]] if following else None
    return {"order": order,
            "credentials": {c["name"]: c for c in tasks_of(rendered, "awx.awx.credential")},
            "types": {t["name"]: t for t in tasks_of(rendered, "awx.awx.credential_type")}}


def survey_answers(template: dict, answers: dict) -> dict:
    """The survey's defaults, with ANSWERS where given, each checked against the spec."""
    chosen = {}
    for question in (template.get("survey_spec") or {}).get("spec", []):
        value = answers.get(question["variable"], question["default"])
        if question["type"] == "multiplechoice":
            assert value in question["choices"], (question["variable"], value)
        if question["type"] == "integer":
            assert question["min"] <= value <= question["max"], (question["variable"], value)
        chosen[question["variable"]] = value
    return chosen


def injected(template: dict, conf: dict, inputs: dict[str, dict], pdd: Path):
    """The env and extra vars the template's credentials inject (INPUTS by credential type)."""
    env, extra = {}, {}
    for name in template.get("credentials", []):
        kind = conf["credentials"][name]["credential_type"]
        values = {**conf["credentials"][name]["inputs"], **inputs.get(kind, {})}
        if "ssl_ca_cert" in values:
            (pdd / "env").mkdir(exist_ok=True)
            ca_file = pdd / "env" / f"{kind.split()[0].lower()}-ca.pem"
            ca_file.write_text(values["ssl_ca_cert"])
            values["ca_file"] = str(ca_file)
        if kind in BUILTIN_INJECTORS:
            injectors = {"env": BUILTIN_INJECTORS[kind]}
        else:
            injectors = conf["types"][kind]["injectors"]
        for target, into in (("env", env), ("extra_vars", extra)):
            for key, text in injectors.get(target, {}).items():
                into[key] = jinja2.Template(text).render(**values)
    return env, extra


def project_sync(checkout_tar: Path, pdd: Path, env: dict) -> Path:
    """project/ from the checkout, its collection requirements installed as AWX does."""
    project = pdd / "project"
    project.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(checkout_tar), "-C", str(project)], check=True)
    colls = pdd / "requirements_collections"
    done = subprocess.run(
        [env["GALAXY"], "collection", "install", "--offline", "-r",
         "collections/requirements.yml", "-p", str(colls)],
        cwd=project, env=env["ENV"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return colls


def write_inventory(pdd: Path, source: Path, env: dict):
    """inventory/: the inventory source's hosts, groups and vars as AWX imports them."""
    done = subprocess.run([env["INVENTORY"], "-i", str(source), "--list", "--export", "-y"],
                          cwd=pdd, env=env["ENV"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    (pdd / "inventory").mkdir(exist_ok=True)
    (pdd / "inventory" / "hosts.yml").write_text(done.stdout)


def run_job(pdd: Path, ident: str, template: dict, extravars: dict, envvars: dict,
            env: dict) -> dict:
    """One job: env/ written for it, ansible-runner run, its artifacts read back."""
    (pdd / "env").mkdir(exist_ok=True)
    (pdd / "env" / "extravars").write_text(yaml.safe_dump(extravars))
    (pdd / "env" / "envvars").write_text(yaml.safe_dump(envvars))
    (pdd / "env" / "cmdline").write_text("--diff" if template.get("diff_mode") else "")
    done = subprocess.run([env["RUNNER"], "run", str(pdd), "-p", template["playbook"],
                           "--ident", ident], env=env["ENV"], capture_output=True,
                          text=True, timeout=1800, check=False)
    artifacts = pdd / "artifacts" / ident
    events = [json.loads(p.read_text()) for p in (artifacts / "job_events").glob("*.json")]
    stats = [e["event_data"] for e in events if e["event"] == "playbook_on_stats"]
    changed = sorted({e["event_data"].get("task", "") for e in events
                      if e["event"] == "runner_on_ok"
                      and e["event_data"].get("res", {}).get("changed")})
    return {"status": (artifacts / "status").read_text().strip(), "artifacts": artifacts,
            "stats": stats[-1] if stats else {}, "changed_tasks": changed,
            "output": (done.stdout + done.stderr)[-6000:]}
