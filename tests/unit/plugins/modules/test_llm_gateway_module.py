"""llm_gateway's DOCUMENTATION is the argument spec (names, types, defaults, required) and
the runner's Request takes every option of it but the connection ones."""

from __future__ import annotations

import ast
import dataclasses
import pathlib

import yaml
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import (
    k8s_argument_spec,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.gateway_runner import Request
from ansible_collections.llmops.gpu_stack.plugins.modules import llm_gateway

SOURCE = pathlib.Path(llm_gateway.__file__).read_text()


def _doc(name: str) -> dict:
    for node in ast.parse(SOURCE).body:
        if isinstance(node, ast.Assign) and node.targets[0].id == name:
            return yaml.safe_load(ast.literal_eval(node.value))
    raise AssertionError(name)


def test_documentation_matches_the_argument_spec():
    spec = {k: v for k, v in llm_gateway._argument_spec().items()
            if k not in k8s_argument_spec()}
    options = _doc("DOCUMENTATION")["options"]
    assert set(options) == set(spec)
    for name, arg in spec.items():
        doc = options[name]
        assert doc["type"] == arg["type"], name
        assert doc.get("default") == arg.get("default"), name
        assert doc.get("elements") == arg.get("elements"), name
        assert bool(doc.get("required")) == bool(arg.get("required")), name
    assert spec["master_key"]["no_log"] is True
    assert isinstance(_doc("RETURN"), dict) and isinstance(_doc("EXAMPLES"), list)


def test_every_option_reaches_the_runner():
    spec = set(llm_gateway._argument_spec()) - set(k8s_argument_spec())
    fields = {f.name for f in dataclasses.fields(Request)} - {"check_mode", "diff"}
    assert spec == fields
