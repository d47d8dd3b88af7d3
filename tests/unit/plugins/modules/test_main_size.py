"""Modules stay thin: the main() of every Kubernetes module is under 30 lines."""

from __future__ import annotations

import ast
import pathlib

import pytest

MODULES = pathlib.Path(__file__).resolve().parents[4] / "plugins" / "modules"
KUBERNETES_MODULES = ("olm_operator", "ocp_gpu_nodes", "model_stage", "ray_vllm_cluster",
                      "gpu_fleet_report", "llm_gateway")
LIMIT = 30


def main_length(source: str) -> int | None:
    """Lines of the top-level ``main()`` (decorators excluded), or None without one."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            return node.end_lineno - node.lineno + 1
    return None


def test_every_module_file_parses_and_has_a_main():
    files = sorted(MODULES.glob("*.py"))
    assert {f.stem for f in files} >= set(KUBERNETES_MODULES)
    for path in files:
        if path.name != "__init__.py":
            assert main_length(path.read_text(encoding="utf-8")) is not None, path.name


@pytest.mark.parametrize("name", KUBERNETES_MODULES)
def test_kubernetes_module_main_is_short(name):
    length = main_length((MODULES / f"{name}.py").read_text(encoding="utf-8"))
    assert length < LIMIT, f"{name}.main() is {length} lines; move the work into its runner"


def test_the_counter_sees_a_long_main():
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    assert main_length(f"import os\n\n\ndef main():\n{body}\n") == LIMIT + 1
