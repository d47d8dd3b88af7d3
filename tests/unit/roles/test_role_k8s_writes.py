"""Every role task that writes through kubernetes.core.k8s retries a 409, and only a 409.

kubernetes.core.k8s has no retry of its own; our modules retry through K8sClient. A task
that applies or deletes an object therefore carries the one task-level retry: ``until``
the result succeeded or its ``reason`` is not ``Conflict``. The lab tests inject the 409
(tests/integration/openshift/test_openshift_stage.py, test_model_stage.py); this test
makes sure no write task is left without the retry.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[3] / "roles"
WRITERS = ("kubernetes.core.k8s",)


def _tasks(node):
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        yield node
        for key in ("block", "rescue", "always"):
            yield from _tasks(node.get(key) or [])


def _writes() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(ROLES.glob("*/tasks/*.yml")):
        for task in _tasks(yaml.safe_load(path.read_text()) or []):
            if any(module in task for module in WRITERS):
                found.append((f"{path.relative_to(ROLES)}: {task.get('name')}", task))
    return found


def retry_problem(task: dict) -> str | None:
    """What is wrong with a write task's 409 retry, or None."""
    register, until = task.get("register"), str(task.get("until") or "")
    if not register:
        return "registers no result to test"
    if f"{register} is succeeded" not in until or "'Conflict'" not in until:
        return f"until must be '{register} is succeeded or {register}.reason ... != 'Conflict''"
    if not isinstance(task.get("retries"), int) or task["retries"] < 1:
        return "no retries"
    return None


def test_the_roles_write_through_kubernetes_core():
    names = [name for name, _task in _writes()]
    assert len(names) >= 5, names  # KubeRay manifests, NFD, ClusterPolicy, loader pod x2


@pytest.mark.parametrize(("name", "task"), _writes(), ids=[n for n, _t in _writes()])
def test_each_write_retries_a_conflict(name, task):
    assert retry_problem(task) is None, f"{name}: {retry_problem(task)}"


@pytest.mark.parametrize("task", [
    {"kubernetes.core.k8s": {}},
    {"kubernetes.core.k8s": {}, "register": "r", "retries": 3, "until": "r is succeeded"},
    {"kubernetes.core.k8s": {}, "register": "r",
     "until": "r is succeeded or r.reason | default('') != 'Conflict'"},
])
def test_the_check_finds_a_missing_or_partial_retry(task):
    assert retry_problem(task) is not None
