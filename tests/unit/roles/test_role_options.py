"""Complex role inputs are typed: every dict (and list of dicts) option has ``options:``,
except free-form maps, which say so in their description."""

from __future__ import annotations

import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
TYPED_ROLES = ("ocp_gpu_nodes", "gpu_operators", "model_storage")
FREE_FORM_MAPS = {"ocp_gpu_nodes_node_map", "ocp_gpu_nodes_labels", "gpu_operators_node_map",
                  "gpu_operators_nfd_overrides", "gpu_operators_cluster_policy_overrides"}


def _untyped(options: dict, path: str = "") -> list[str]:
    out = []
    for name, spec in (options or {}).items():
        where = f"{path}{name}"
        is_dict = spec.get("type") == "dict" or (spec.get("type") == "list"
                                                 and spec.get("elements") == "dict")
        if is_dict and "options" not in spec and name not in FREE_FORM_MAPS:
            out.append(where)
        out += _untyped(spec.get("options"), f"{where}.")
    return out


def _free_form_described(spec: dict) -> bool:
    text = spec["description"]
    text = " ".join(text) if isinstance(text, list) else text
    return "free-form" in text or "no fixed sub-options" in text


@pytest.mark.parametrize("role", TYPED_ROLES)
def test_every_dict_option_is_typed(role):
    path = ROOT / "roles" / role / "meta" / "argument_specs.yml"
    options = yaml.safe_load(path.read_text())["argument_specs"]["main"]["options"]
    assert _untyped(options) == []
    for name in FREE_FORM_MAPS & set(options):
        assert _free_form_described(options[name]), name


@pytest.mark.parametrize("role", TYPED_ROLES)
def test_secrets_are_no_log(role):
    path = ROOT / "roles" / role / "meta" / "argument_specs.yml"
    options = yaml.safe_load(path.read_text())["argument_specs"]["main"]["options"]
    for name, spec in options.items():
        if name.endswith(("_k8s_auth", "_credentials")):
            assert spec.get("no_log") is True, name
            assert all(sub.get("no_log") for key, sub in spec["options"].items()
                       if key in ("api_key", "password", "token", "AWS_SECRET_ACCESS_KEY")), name


def test_the_check_finds_an_untyped_dict():
    options = {"a": {"type": "dict", "options": {"b": {"type": "list", "elements": "dict"}}},
               "ocp_gpu_nodes_labels": {"type": "dict"}, "c": {"type": "dict"}}
    assert _untyped(options) == ["a.b", "c"]


def _validate(role: str, values: dict) -> list[str]:
    """Ansible's own validator (what a role runs at its start) on literal values."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    path = ROOT / "roles" / role / "meta" / "argument_specs.yml"
    spec = yaml.safe_load(path.read_text())["argument_specs"]["main"]["options"]
    literal = {k: v for k, v in values.items()
               if k in spec and not (isinstance(v, str) and "{{" in v)}
    errors = ArgumentSpecValidator(spec).validate(literal).error_messages
    # a required top-level option comes from the inventory, not from defaults
    return [e for e in errors if not (e.startswith("missing required") and "found in" not in e)]


ALL_ROLES = sorted(p.parent.parent.name for p in ROOT.glob("roles/*/meta/argument_specs.yml"))


@pytest.mark.parametrize("role", ALL_ROLES)
def test_defaults_pass_the_roles_own_validation(role):
    defaults = ROOT / "roles" / role / "defaults" / "main.yml"
    values = yaml.safe_load(defaults.read_text()) if defaults.exists() else {}
    assert _validate(role, values or {}) == []


@pytest.mark.parametrize("inventory", ["example", "lab"])
@pytest.mark.parametrize("role", TYPED_ROLES)
def test_inventory_values_pass_the_typed_options(role, inventory):
    values = {}
    for path in sorted((ROOT / "inventories" / inventory / "group_vars").rglob("*.yml")):
        values.update(yaml.safe_load(path.read_text()) or {})
    assert _validate(role, values) == []


def test_the_validation_catches_a_bad_nested_value():
    errors = _validate("model_storage", {
        "model_storage_pvc": {"size": "1Gi", "reclaim_policy": "Keep"},
        "model_storage_source": {"type": "ftp", "repo": "x"}})
    text = " ".join(errors)
    assert "reclaim_policy" in text and "ftp" in text and "repo" in text
    missing = _validate("model_storage", {"model_storage_pvc": {"size": "1Gi"}})
    assert any("name found in model_storage_pvc" in e for e in missing), missing
