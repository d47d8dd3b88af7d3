"""The controller configuration (playbooks/awx/configure.yml), validated offline.

Each awx.awx task is rendered by Ansible's own Templar for every loop item (in a process
of its own: render_configuration.py) and its parameters are checked with
ArgumentSpecValidator against the argument spec the installed awx.awx module (the one the
pinned ``ansible`` package ships, found through Ansible's plugin loader) gives
AnsibleModule. Then what the configuration means: the credential types inject what the
roles read, one job template per stage of playbooks/site.yml, the workflow runs them in
that order and stops at the first failure, with an approval node when asked.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from .controller import MAIN_TOOLCHAIN_ONLY, REPO, render, tasks_of

pytestmark = MAIN_TOOLCHAIN_ONLY
_VALIDATOR_KWARGS = ("mutually_exclusive", "required_together", "required_one_of",
                     "required_if", "required_by")
_BUILTIN_TYPES = {"VMware vCenter", "OpenShift or Kubernetes API Bearer Token"}


def _errors(module_kwargs: dict, params: dict) -> list[str]:
    validator = ArgumentSpecValidator(
        module_kwargs["argument_spec"],
        **{key: module_kwargs[key] for key in _VALIDATOR_KWARGS if key in module_kwargs})
    result = validator.validate(params)
    errors = [str(error) for error in result.errors]
    if result.unsupported_parameters:
        errors.append(f"unsupported: {sorted(result.unsupported_parameters)}")
    return errors


def _site_stages() -> list[str]:
    """The stage playbooks site.yml imports, in order, without the lab's plays."""
    site = yaml.safe_load((REPO / "playbooks/site.yml").read_text())
    imports = [play["ansible.builtin.import_playbook"] for play in site]
    return [f"playbooks/{name}" for name in imports if not name.startswith("lab")]


def test_modules_come_from_the_ansible_packages_awx_collection(configuration):
    # the awx.awx the pinned ansible package ships
    shipped = Path(next(iter(importlib.import_module("ansible_collections.awx.awx").__path__)))
    assert set(configuration["modules"]) >= {
        "awx.awx.credential_type", "awx.awx.credential", "awx.awx.execution_environment",
        "awx.awx.project", "awx.awx.inventory", "awx.awx.inventory_source",
        "awx.awx.job_template", "awx.awx.workflow_job_template"}
    for name, module in configuration["modules"].items():
        assert Path(module["path"]) == shipped / "plugins/modules" / f"{name.split('.')[-1]}.py"
        assert "name" in module["kwargs"]["argument_spec"]


def test_every_awx_task_is_valid_for_its_module(configuration):
    problems = {}
    for task in configuration["tasks"]:
        errors = _errors(configuration["modules"][task["module"]]["kwargs"], task["params"])
        if errors:
            problems[f"{task['task']} / {task['params'].get('name')}"] = errors
    assert not problems, problems
    assert len(configuration["tasks"]) >= 15


def test_the_validation_catches_a_wrong_type_and_an_unknown_option(configuration):
    job_template = tasks_of(configuration, "awx.awx.job_template")[0]
    kwargs = configuration["modules"]["awx.awx.job_template"]["kwargs"]
    assert _errors(kwargs, job_template) == []
    wrong = {**job_template, "survey_enabled": "perhaps", "playbok": "x.yml"}
    errors = _errors(kwargs, wrong)
    assert any("survey_enabled" in error for error in errors), errors
    assert any("playbok" in error for error in errors), errors


def test_secrets_are_not_logged(configuration):
    playbook = yaml.safe_load((REPO / "playbooks/awx/configure.yml").read_text())
    credential_tasks = [task for task in playbook[0]["tasks"] if "awx.awx.credential" in task]
    assert credential_tasks and all(task.get("no_log") is True for task in credential_tasks)


def test_custom_credential_types_inject_what_the_roles_read(configuration, role_options):
    types = {params["name"]: params
             for params in tasks_of(configuration, "awx.awx.credential_type")}
    assert set(types) == {"Hugging Face token", "S3 keys", "LLM API key"}
    injected_env, injected_vars = set(), set()
    for params in types.values():
        fields = {field["id"]: field for field in params["inputs"]["fields"]}
        assert set(params["inputs"]["required"]) <= set(fields)
        for kind, injected in params["injectors"].items():
            assert kind in {"env", "extra_vars"}
            for name, template in injected.items():
                used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", template))
                assert used and used <= set(fields), (name, template)
                # a secret goes only where it is not logged
                assert all(fields[field].get("secret") for field in used) or kind == "env"
            (injected_env if kind == "env" else injected_vars).update(injected)
    # the S3 keys under the names model_storage_credentials takes them
    s3_names = set(role_options["model_storage_credentials"]["options"]) - {"token"}
    assert s3_names <= injected_env and "HF_TOKEN" in injected_env
    # the API key straight into the role options that take it, which are no_log
    assert injected_vars == {"ray_vllm_api_key", "validate_api_key"}
    assert all(role_options[name].get("no_log") for name in injected_vars)


def test_builtin_credential_types_for_vcenter_and_the_cluster(configuration):
    credentials = tasks_of(configuration, "awx.awx.credential")
    by_type = {params["credential_type"]: params for params in credentials}
    assert set(by_type) >= _BUILTIN_TYPES
    assert set(by_type["VMware vCenter"]["inputs"]) >= {"host", "username", "password"}
    assert set(by_type["OpenShift or Kubernetes API Bearer Token"]["inputs"]) >= {
        "host", "bearer_token"}
    custom = {params["name"] for params in tasks_of(configuration, "awx.awx.credential_type")}
    assert set(by_type) <= _BUILTIN_TYPES | custom


def test_project_inventory_source_and_execution_environment_agree(configuration):
    [project] = tasks_of(configuration, "awx.awx.project")
    [inventory] = tasks_of(configuration, "awx.awx.inventory")
    [source] = tasks_of(configuration, "awx.awx.inventory_source")
    [ee] = tasks_of(configuration, "awx.awx.execution_environment")
    assert project["default_environment"] == ee["name"] == source["execution_environment"]
    assert (source["source"], source["source_project"], source["inventory"]) == (
        "scm", project["name"], inventory["name"])
    assert (REPO / source["source_path"] / "hosts.yml").is_file()
    for params in tasks_of(configuration, "awx.awx.job_template"):
        assert (params["project"], params["inventory"], params["execution_environment"]) == (
            project["name"], inventory["name"], ee["name"])


def test_one_job_template_per_stage_in_site_order(configuration):
    templates = tasks_of(configuration, "awx.awx.job_template")
    assert [params["playbook"] for params in templates] == _site_stages()
    assert all((REPO / params["playbook"]).is_file() for params in templates)
    credentials = {params["name"] for params in tasks_of(configuration, "awx.awx.credential")}
    for params in templates:
        assert params["credentials"] and set(params["credentials"]) <= credentials


def _workflow(configuration: dict) -> tuple[list[dict], dict]:
    [workflow] = tasks_of(configuration, "awx.awx.workflow_job_template")
    nodes = workflow["workflow_nodes"]
    present = [node for node in nodes if node.get("state", "present") == "present"]
    return present, {node["identifier"]: node for node in present}


def _chain(nodes: list[dict], by_id: dict) -> list[str]:
    """The identifiers from the root along success links; fails on any branching."""
    children = {node["identifier"]: [link["identifier"] for link in node["related"].get(
        "success_nodes", [])] for node in nodes}
    roots = set(children) - {child for kids in children.values() for child in kids}
    assert len(roots) == 1, roots
    chain = [roots.pop()]
    while children[chain[-1]]:
        [following] = children[chain[-1]]
        chain.append(following)
    assert len(chain) == len(nodes), chain
    return chain


def test_the_workflow_runs_the_stages_in_order_and_stops_on_failure(configuration):
    nodes, by_id = _workflow(configuration)
    for node in nodes:
        assert set(node["related"]) == {"success_nodes"}, node  # no failure/always paths
        assert all(link["identifier"] in by_id for link in node["related"]["success_nodes"])
    names = {params["name"]: params["playbook"]
             for params in tasks_of(configuration, "awx.awx.job_template")}
    chain = _chain(nodes, by_id)
    assert [by_id[ident]["unified_job_template"]["type"] for ident in chain] == [
        "job_template"] * len(_site_stages())
    assert [names[by_id[ident]["unified_job_template"]["name"]] for ident in chain] == \
        _site_stages()


def test_an_approval_node_comes_before_the_reboots_when_asked():
    nodes, by_id = _workflow(render({"gpu_stack_awx_reboot_approval": True}))
    chain = _chain(nodes, by_id)
    approval = by_id[chain[0]]["unified_job_template"]
    assert approval["type"] == "workflow_approval" and approval["timeout"] > 0
    assert by_id[chain[1]]["unified_job_template"]["name"].endswith("ESXi GPU passthrough")
    assert [by_id[ident]["unified_job_template"]["type"] for ident in chain[1:]] == [
        "job_template"] * len(_site_stages())
