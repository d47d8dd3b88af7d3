"""The surveys of the job templates and the site workflow.

Each question has a type the controller knows, a default inside its choices or bounds,
and ends up as a role option the role accepts: a question whose variable is a role
option is checked against that option's argument spec for its default and every choice
or bound; any other variable must be mapped to role options by the job template's
extra_vars, which are evaluated here with Ansible's Templar for every answer and the
result checked against the roles' argument specs.
"""

from __future__ import annotations

import re

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.template import Templar, trust_as_template

from .controller import MAIN_TOOLCHAIN_ONLY, tasks_of

pytestmark = MAIN_TOOLCHAIN_ONLY
_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _surveys(configuration: dict) -> dict[str, dict]:
    """Survey spec by template name (job templates and the workflow)."""
    surveys = {}
    for module in ("awx.awx.job_template", "awx.awx.workflow_job_template"):
        for params in tasks_of(configuration, module):
            assert bool(params["survey_enabled"]) == bool(params["survey_spec"]), params["name"]
            if params["survey_spec"]:
                surveys[params["name"]] = params["survey_spec"]
    return surveys


def _answers(question: dict) -> list:
    """Every answer worth checking: the default and each choice, or the bounds."""
    if question["type"] in ("multiplechoice", "multiselect"):
        return [question["default"], *question["choices"]]
    if question["type"] in ("integer", "float"):
        return [question["default"], question["min"], question["max"]]
    return [question["default"]]


def _role_errors(role_options: dict, values: dict) -> list[str]:
    spec = {name: role_options[name] for name in values}
    result = ArgumentSpecValidator(spec).validate(values)
    return [str(error) for error in result.errors]


def test_every_template_that_asks_has_a_survey(configuration):
    surveys = _surveys(configuration)
    asked = {variable for survey in surveys.values() for variable in
             (question["variable"] for question in survey["spec"])}
    assert asked == {"gpu_stack_awx_model_preset", "serving_plan_max_nodes",
                     "esxi_gpu_passthrough_reboot", "gpu_stack_awx_operator_upgrade",
                     "validate_requests", "validate_concurrency"}
    [workflow] = tasks_of(configuration, "awx.awx.workflow_job_template")
    assert {question["variable"] for question in surveys[workflow["name"]]["spec"]} == asked


def test_questions_are_well_formed(configuration):
    for name, survey in _surveys(configuration).items():
        assert survey["name"] and survey["spec"], name
        variables = [question["variable"] for question in survey["spec"]]
        assert len(variables) == len(set(variables)), name
        for question in survey["spec"]:
            where = f"{name}: {question['variable']}"
            assert question["type"] in _TYPES, where
            assert _VARIABLE.match(question["variable"]), where
            assert question["question_name"] and isinstance(question["required"], bool), where
            if question["type"] == "multiplechoice":
                choices = question["choices"]
                assert choices and all(isinstance(choice, str) for choice in choices), where
                assert len(choices) == len(set(choices)), where
                assert question["default"] in choices, where
            elif question["type"] == "integer":
                bounds = (question["min"], question["default"], question["max"])
                assert all(isinstance(value, int) and not isinstance(value, bool)
                           for value in bounds), where
                assert question["min"] <= question["default"] <= question["max"], where


def test_a_question_is_the_same_wherever_it_is_asked(configuration):
    seen = {}
    for survey in _surveys(configuration).values():
        for question in survey["spec"]:
            assert seen.setdefault(question["variable"], question) == question


def test_direct_answers_are_valid_role_options(configuration, role_options):
    for survey in _surveys(configuration).values():
        for question in survey["spec"]:
            variable = question["variable"]
            if variable not in role_options:
                continue
            option = role_options[variable]
            if question["type"] == "integer":
                assert option["type"] == "int", variable
            if question["type"] == "multiplechoice":
                assert option["type"] == "str", variable
                assert set(question["choices"]) <= set(option["choices"]), variable
                assert option.get("default") in question["choices"], variable
            for answer in _answers(question):
                assert _role_errors(role_options, {variable: answer}) == [], (variable, answer)


def _mapped(extra_vars: dict, variable: str, answer) -> dict:
    templar = Templar(variables={variable: answer})
    trusted = {name: _trusted(value) for name, value in extra_vars.items()}
    return templar.template(trusted)


def _trusted(value):
    if isinstance(value, dict):
        return {key: _trusted(item) for key, item in value.items()}
    return trust_as_template(value) if isinstance(value, str) else value


def test_mapped_answers_become_valid_role_options(configuration, role_options):
    for params in tasks_of(configuration, "awx.awx.job_template"):
        for question in (params["survey_spec"] or {}).get("spec", []):
            variable = question["variable"]
            if variable in role_options:
                continue
            uses = {name: value for name, value in params["extra_vars"].items()
                    if variable in str(value)}
            assert uses, f"{params['name']}: nothing reads {variable}"
            for answer in _answers(question):
                values = _mapped(uses, variable, answer)
                assert _role_errors(role_options, values) == [], (variable, answer, values)


@pytest.mark.parametrize(("answer", "upgrade"), [("yes", True), ("no", False)])
def test_the_operator_upgrade_answer_is_a_boolean(configuration, answer, upgrade):
    [openshift] = [params for params in tasks_of(configuration, "awx.awx.job_template")
                   if params["playbook"] == "playbooks/openshift.yml"]
    values = _mapped(openshift["extra_vars"], "gpu_stack_awx_operator_upgrade", answer)
    assert values == {"gpu_operators_upgrade": upgrade}


def test_the_model_preset_reaches_the_plan_and_the_served_name(configuration, role_options):
    [serving] = [params for params in tasks_of(configuration, "awx.awx.job_template")
                 if params["playbook"] == "playbooks/serving.yml"]
    presets = role_options["serving_plan_model"]["options"]["preset"]["choices"]
    [question] = [question for question in serving["survey_spec"]["spec"]
                  if question["variable"] == "gpu_stack_awx_model_preset"]
    assert set(question["choices"]) == set(presets)
    values = _mapped(serving["extra_vars"], "gpu_stack_awx_model_preset", "mistral-7b")
    assert values == {"serving_plan_model": {"preset": "mistral-7b"},
                      "ray_vllm_served_model_name": "mistral-7b"}
