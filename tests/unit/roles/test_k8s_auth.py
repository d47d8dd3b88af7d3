"""The k8s auth option is defined once (k8s_auth_spec) and every role's copy matches it."""

from __future__ import annotations

import pytest
import yaml

from .k8s_auth_spec import ROLES, ROOT, block, drift, expected_entry, render


def _spec_text(role: str) -> str:
    return (ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text(encoding="utf-8")


@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_role_carries_the_one_definition(role):
    assert drift(_spec_text(role), ROLES[role]) == []


@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_role_defaults_to_the_inventory_wide_auth(role):
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    assert defaults[ROLES[role]] == "{{ gpu_stack_k8s_auth | default({}) }}"


def test_the_source_follows_what_the_modules_accept():
    entry = expected_entry()
    assert entry["no_log"] is True and entry["type"] == "dict"
    options = entry["options"]
    assert options["api_key"]["no_log"] and options["password"]["no_log"]
    assert options["kubeconfig"]["no_log"] and options["validate_certs"]["type"] == "bool"
    assert options["proxy_headers"]["options"]["basic_auth"]["no_log"]
    assert "no_log" not in options["host"]


@pytest.mark.parametrize(("edit", "reported"), [
    (lambda t: t.replace("            description: A bearer token for the API server.\n"
                         "            type: str\n            no_log: true\n",
                         "            description: A bearer token for the API server.\n"
                         "            type: str\n"), "ray_vllm_k8s_auth.options.api_key"),
    (lambda t: t.replace("          validate_certs:\n"
                         "            description: Whether to verify the API server's TLS "
                         "certificate.\n            type: bool\n", ""),
     "ray_vllm_k8s_auth.options.validate_certs"),
    (lambda t: t.replace("        type: dict\n        no_log: true\n        options:\n          "
                         "kubeconfig:", "        type: dict\n        options:\n          "
                         "kubeconfig:", 1), "ray_vllm_k8s_auth.no_log"),
    (lambda t: t.replace("User to impersonate.", "'User to impersonate.'"),
     "same meaning, different text"),
    (lambda t: t.replace("ray_vllm_k8s_auth:", "ray_vllm_auth:"), "ray_vllm_k8s_auth is missing"),
])
def test_the_checker_catches_a_drift(edit, reported):
    text = _spec_text("ray_vllm")
    changed = edit(text)
    assert changed != text, "the edit did not apply: fix the test"
    problems = drift(changed, "ray_vllm_k8s_auth")
    assert any(reported in p for p in problems), problems


def test_block_finds_exactly_the_rendered_entry():
    text = _spec_text("model_storage")
    assert block(text, "model_storage_k8s_auth") == render("model_storage_k8s_auth")
    assert block(text, "no_such_option") == ""
