"""Each role documents its outputs (README.md and the argument_specs description) and
shows an example play; no README says preflight runs under ``always``."""

from __future__ import annotations

import pathlib
import re

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLES = sorted(p.parent.parent.name for p in ROOT.glob("roles/*/meta/argument_specs.yml"))


def _description(role: str) -> str:
    path = ROOT / "roles" / role / "meta" / "argument_specs.yml"
    text = yaml.safe_load(path.read_text())["argument_specs"]["main"]["description"]
    return " ".join(text) if isinstance(text, list) else text


@pytest.mark.parametrize("role", ROLES)
def test_readme_documents_outputs_and_shows_a_play(role):
    readme = ROOT / "roles" / role / "README.md"
    assert readme.exists(), f"{role} has no README.md"
    text = readme.read_text()
    assert re.search(r"^Outputs:", text, re.M), f"{role}: no 'Outputs:' section"
    plays = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert plays, f"{role}: no example play"
    roles_used = [entry["role"] if isinstance(entry, dict) else entry
                  for play in yaml.safe_load(plays[-1]) for entry in play.get("roles", [])]
    assert f"llmops.gpu_stack.{role}" in roles_used, roles_used


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_describe_outputs(role):
    assert re.search(r"(?i)\boutputs\b", _description(role)), f"{role}: outputs not described"


@pytest.mark.parametrize("role", ROLES)
def test_no_readme_runs_preflight_as_always(role):
    text = (ROOT / "roles" / role / "README.md").read_text()
    assert not re.search(r"preflight[^.\n]*\balways\b|\balways\b[^.\n]*preflight", text), role
