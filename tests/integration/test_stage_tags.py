"""Every stage runs by its tag: ``site.yml --tags <stage>`` selects that stage's play and
nothing of the others (only the lab's start, tagged ``always``). Read from what
ansible-playbook itself would run (``--list-tasks``), not from the YAML."""

from __future__ import annotations

import re

import pytest
import yaml

from .playbook import REPO, run_playbook

STAGES = {"plan": "plan.yml", "esxi": "esxi.yml", "openshift": "openshift.yml",
          "storage": "storage.yml", "serving": "serving.yml", "gateway": "gateway.yml",
          "monitoring": "monitoring.yml", "validate": "validate.yml"}
LAB_PLAY = yaml.safe_load((REPO / "playbooks" / "lab.yml").read_text())[0]["name"]
_PLAY = re.compile(r"^\s*play #\d+ \([^)]*\): (?P<name>.*?)\tTAGS: \[(?P<tags>[^\]]*)\]")
_TASK = re.compile(r"^\s{6}\S.*\tTAGS: \[(?P<tags>[^\]]*)\]")
# Ansible checks every role's argument spec whatever the tags (its own task, tagged
# always): a check of the inputs, not a step of the stage.
_ARG_SPEC = "Validating arguments against arg spec"


def _play_names(stage: str) -> list[str]:
    return [play["name"] for play in
            yaml.safe_load((REPO / "playbooks" / STAGES[stage]).read_text())]


def _listed(tmp_path, *extra) -> dict[str, list[str]]:
    """{play name: the tasks ansible-playbook lists for it} of site.yml with ``extra``."""
    rc, _results, out = run_playbook(
        tmp_path, playbook=REPO / "playbooks" / "site.yml",
        inventory=str(REPO / "inventories" / "lab"), local=False, json_out=False,
        extra=("--list-tasks", *extra), env={"GPU_LAB_HOME": str(tmp_path / "lab")})
    assert rc == 0, out[-3000:]
    plays: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        play = _PLAY.match(line)
        if play:
            current = play["name"]
            plays.setdefault(current, [])
        elif current and _TASK.match(line) and _ARG_SPEC not in line:
            plays[current].append(line.strip())
    return plays


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_tag_selects_that_stage_alone(tmp_path, stage):
    plays = _listed(tmp_path, "--tags", stage)
    if stage == "plan":
        # the serving play plans itself when run alone; under site.yml its planner tasks
        # (tagged plan) skip, the plan play having set the fact serving_plan
        serving = plays.pop(_play_names("serving")[0])
        assert serving and all(t.startswith("llmops.gpu_stack.serving_plan :")
                               for t in serving), serving
    with_tasks = {name for name, tasks in plays.items() if tasks}
    assert with_tasks == {LAB_PLAY, *_play_names(stage)}, plays


def test_without_tags_every_stage_runs(tmp_path):
    plays = _listed(tmp_path)
    for stage in STAGES:
        for name in _play_names(stage):
            assert plays.get(name), f"{stage}: play {name!r} lists no task: {plays}"
