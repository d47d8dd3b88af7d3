"""Each role's meta/argument_specs.yml (the contract) agrees with its defaults/main.yml."""

from __future__ import annotations

import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
ROLES = sorted(path.parent.parent for path in ROOT.glob("roles/*/meta/argument_specs.yml"))


def _load(path: pathlib.Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def test_roles_are_found():
    assert any(role.name == "serving_plan" for role in ROLES)


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_defaults_agree_with_the_argument_spec(role):
    options = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    defaults_file = role / "defaults" / "main.yml"
    defaults = _load(defaults_file) if defaults_file.exists() else {}
    undocumented = sorted(set(defaults) - set(options))
    assert not undocumented, f"defaults without a spec entry: {undocumented}"
    for name, spec in options.items():
        assert spec.get("description"), f"{name} has no description"
        assert spec.get("type"), f"{name} has no type"
        if spec.get("required"):
            assert "default" not in spec, f"{name} is required and has a default"
            assert name not in defaults, f"{name} is required and set in defaults/main.yml"
        elif "default" in spec:
            assert name in defaults, f"{name} has a spec default but none in defaults/main.yml"
            assert defaults[name] == spec["default"], f"{name}: defaults and spec disagree"
        elif name in defaults:
            # a default derived from another variable (a template) cannot be a literal
            # spec default; the spec's description must then say where it comes from
            value = defaults[name]
            assert isinstance(value, str) and "{{" in value, (
                f"{name}: set in defaults/main.yml, no spec default")
            assert "efault" in spec["description"] if isinstance(
                spec["description"], str) else any("efault" in d for d in spec["description"]), (
                f"{name}: derived default not explained in its description")
