"""The gitops_export module's main(): check mode, diff, idempotence, one error type."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.llmops.gpu_stack.plugins.modules import gitops_export

from .conftest import NS

STAGES = {"storage": {"namespace": NS, "pvc": {"name": "models", "size": "10Gi"}}}
APP = {"repo_url": "https://git.example.com/platform/gpu-site.git"}


def _run(capsys, args: dict) -> tuple[int, dict]:
    with patch_module_args(args), pytest.raises(SystemExit) as info:
        gitops_export.main()
    return info.value.code, json.loads(capsys.readouterr().out)


def test_check_mode_then_write_then_nothing(capsys, tmp_path):
    args = {"dest": str(tmp_path / "tree"), "inventory": "lab", "stages": STAGES,
            "application": APP}
    code, check = _run(capsys, {**args, "_ansible_check_mode": True, "_ansible_diff": True})
    assert code == 0 and check["changed"] is True
    assert "overlays/lab/storage/persistentvolumeclaim-models.yaml" in check["written"]
    assert "storage: 10Gi" in check["diff"]["after"][
        "overlays/lab/storage/persistentvolumeclaim-models.yaml"]
    assert not (tmp_path / "tree").exists()

    code, first = _run(capsys, args)
    assert code == 0 and first["changed"] is True and "diff" not in first
    assert sorted(p.relative_to(tmp_path / "tree").as_posix()
                  for p in (tmp_path / "tree").rglob("*") if p.is_file()) == first["files"]
    code, again = _run(capsys, args)
    assert code == 0 and again["changed"] is False and again["written"] == []


def test_a_bad_stage_fails_before_any_write(capsys, tmp_path):
    code, result = _run(capsys, {"dest": str(tmp_path / "tree"), "inventory": "lab",
                                 "stages": {**STAGES, "no-such-stage": {}}})
    assert code == 1 and result["failed"]
    assert "unknown stage 'no-such-stage'" in result["msg"]
    assert not (tmp_path / "tree").exists()
