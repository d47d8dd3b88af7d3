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
