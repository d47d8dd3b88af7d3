"""The gitops_export role passes the serving module's every option the ray_vllm role
passes (its template names each), so a new option of the serving stage cannot be left
out of the export unnoticed."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[5]
# Not rendered into Git: the run's state, its wait, the key (a Secret reference instead).
NOT_EXPORTED = {"state", "wait_timeout", "llm_api_key"}


def _module_args(tasks: list) -> dict:
    for task in tasks:
        loop = task.get("loop", "").strip()
        if "llmops.gpu_stack.ray_vllm_cluster" in task and loop == "{{ ray_vllm_releases }}":
            return task["llmops.gpu_stack.ray_vllm_cluster"]
        found = _module_args(task.get("block") or [])
        if found:
            return found
    return {}


def test_every_serving_option_of_the_role_is_exported():
    tasks = yaml.safe_load((ROOT / "roles/ray_vllm/tasks/main.yml").read_text())
    args = _module_args(tasks)
    assert {"plan", "image", "backend", "model_dir"} <= set(args)
    template = (ROOT / "roles/gitops_export/templates/stages.yml.j2").read_text()
    missing = [k for k in sorted(set(args) - NOT_EXPORTED) if f"'{k}':" not in template]
    assert missing == [], f"the export's serving entry lacks {missing}"
