"""The serving_plan role's serving_plan_models entries agree with the module's models
option (names, types, choices) and their source with model_storage_source, so one list
in the inventory passes both roles' validation; and the role's entry validation catches
a bad entry before the module runs."""

from __future__ import annotations

import pathlib

import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.llmops.gpu_stack.plugins.modules import serving_plan

ROOT = pathlib.Path(__file__).resolve().parents[4]


def _role_options(role: str) -> dict:
    path = ROOT / "roles" / role / "meta" / "argument_specs.yml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))["argument_specs"]["main"]["options"]


def _differences(mine: dict, theirs: dict, path: str = "") -> list[str]:
    out = sorted(f"{path}{key}: only in one" for key in set(mine) ^ set(theirs))
    for key in sorted(set(mine) & set(theirs)):
        for attr in ("type", "elements"):
            if mine[key].get(attr) != theirs[key].get(attr):
                out.append(f"{path}{key}.{attr}")
        if bool(mine[key].get("required")) != bool(theirs[key].get("required")):
            out.append(f"{path}{key}.required")
        if sorted(mine[key].get("choices") or []) != sorted(theirs[key].get("choices") or []):
            out.append(f"{path}{key}.choices")
        out += _differences(mine[key].get("options") or {}, theirs[key].get("options") or {},
                            f"{path}{key}.")
    return out


def test_role_entries_agree_with_the_module_and_model_storage():
    entry = _role_options("serving_plan")["serving_plan_models"]["options"]
    module = serving_plan.argument_spec()["models"]["options"]
    source = entry.pop("source")
    assert _differences(entry, module) == []
    storage = _role_options("model_storage")["model_storage_source"]["options"]
    assert _differences(source["options"], storage) == []
    assert _differences({"a": {"type": "int"}}, {"a": {"type": "str"}, "b": {}}) == [
        "b: only in one", "a.type"]


def test_role_validation_refuses_a_bad_entry():
    spec = {"serving_plan_models": _role_options("serving_plan")["serving_plan_models"]}
    good = [{"name": "a", "source": {"type": "local", "local_path": "/m"},
             "model": {"preset": "llama-3-8b"}, "backend": "deployment", "replicas": 1}]
    assert ArgumentSpecValidator(spec).validate({"serving_plan_models": good}).error_messages == []
    bad = [{"model": {"preset": "llama-3-8b"}, "backend": "knative",
            "source": {"type": "ftp"}}]
    errors = " ".join(ArgumentSpecValidator(spec).validate(
        {"serving_plan_models": bad}).error_messages)
    assert "name" in errors and "knative" in errors and "ftp" in errors, errors
