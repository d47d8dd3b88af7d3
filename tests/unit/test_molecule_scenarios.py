"""Every role has a molecule scenario against the lab, and CI runs every scenario.

The scenarios (extensions/molecule/) share one lab through molecule's shared state; each
must converge its own role, run check mode and read the lab back after it (the side
effect), prove idempotence and verify."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MOLECULE = REPO / "extensions" / "molecule"
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks" / "main.yml").is_file())
BASE = yaml.safe_load((MOLECULE / "config.yml").read_text())
CHECK_SH = (REPO / "tests" / "check.sh").read_text()


def _scenario(role: str) -> dict:
    own = yaml.safe_load((MOLECULE / role / "molecule.yml").read_text()) or {}
    return {**BASE, **own, "provisioner": {**BASE["provisioner"], **own.get("provisioner", {})}}


def _playbook(role: str, step: str) -> Path:
    name = _scenario(role)["provisioner"].get("playbooks", {}).get(step, f"{step}.yml")
    return (MOLECULE / role / name).resolve()


def _ci_scenarios() -> list[str]:
    gap = r"(?:\s*\\\n|\s)"  # spaces or a line continuation
    command = re.search(rf"molecule test --shared-state({gap}+(?:-s \w+{gap}*)+)", CHECK_SH)
    assert command, "tests/check.sh has no `molecule test --shared-state -s ...` command"
    return re.findall(r"-s (\w+)", command.group(1))


@pytest.mark.parametrize("role", ROLES)
def test_every_role_has_a_scenario_that_converges_it(role):
    converge = _playbook(role, "converge").read_text()
    assert f"llmops.gpu_stack.{role}" in converge


@pytest.mark.parametrize("role", ROLES)
def test_each_scenario_checks_reads_back_and_verifies(role):
    sequence = _scenario(role)["scenario"]["test_sequence"]
    for step in ("check", "side_effect", "converge", "idempotence", "verify"):
        assert step in sequence, f"{role}: no {step} step"
    assert sequence.index("prepare") < sequence.index("check") < sequence.index("side_effect") \
        < sequence.index("converge") < sequence.index("idempotence") < sequence.index("verify")
    for step in ("prepare", "side_effect", "verify"):
        assert _playbook(role, step).is_file(), f"{role}: no {step} playbook"
    assert _playbook(role, "side_effect").name == "compare_state.yml"
    if role != "serving_plan":  # the planner's scenario runs on localhost alone, no lab
        host = _scenario(role)["provisioner"]["inventory"]["host_vars"]["localhost"]
        assert host["molecule_verified_role"] == role
        assert set(host["molecule_prepare"]) <= set(ROLES)
        assert _playbook(role, "prepare").name == "prepare.yml"
        assert "resources/verified.yml" in _playbook(role, "verify").read_text()


def test_ci_runs_every_scenario_in_the_pipeline_order():
    scenarios = _ci_scenarios()
    assert sorted(scenarios) == ROLES
    stages = ["esxi_gpu_passthrough", "ocp_gpu_nodes", "gpu_operators", "model_storage", "ray_vllm",
              "llm_gateway", "monitoring", "validate"]
    assert [s for s in scenarios if s in stages] == stages


def test_the_scenarios_share_one_lab_that_the_default_scenario_starts_and_stops():
    assert BASE["shared_state"] is True
    default = yaml.safe_load((MOLECULE / "default" / "molecule.yml").read_text())
    assert {"create", "destroy"} <= set(default["scenario"]["test_sequence"])
    assert "llmops.gpu_stack.lab" in (MOLECULE / "default" / "create.yml").read_text()
    for step in ("create", "destroy"):  # a new lab holds no verified stage
        text = (MOLECULE / "default" / f"{step}.yml").read_text()
        assert "gpu-lab reset" in text and "molecule-verified" in text
