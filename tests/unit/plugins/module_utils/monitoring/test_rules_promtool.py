"""The rendered alert rules under ``promtool test rules`` (Debian's prometheus package).

Each file of ``rule_tests/`` holds input series, evaluation times, the alerts expected
(labels) and each alert's ``description`` as Prometheus expands it. The rules are the
rendered PrometheusRule's groups at their default thresholds, written beside a copy of
the test file; ``summary`` and ``runbook`` (fixed text without templates) are filled in
from the rule, since promtool compares every annotation.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_collections.llmops.gpu_stack.plugins.module_utils.monitoring import render, rules

TESTS = sorted((Path(__file__).parent / "rule_tests").glob("*.yml"))
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus) absent")

SERVERS = [{"name": n, "namespace": "llm"} for n in ("tiny", "slow", "fast")]


def _rule_file() -> dict:
    out = render.manifests({"namespace": "llm", "servers": SERVERS, "dashboard": False,
                            "ray_metrics": False})
    rule = next(m for m in out if m["kind"] == "PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def _fixed_annotations(groups: list) -> dict:
    return {r["alert"]: {k: v for k, v in r["annotations"].items() if k != "description"}
            for g in groups for r in g["rules"]}


def _prepare(test: Path, work: Path) -> Path:
    groups = _rule_file()["groups"]
    (work / "rules.yml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    doc = yaml.safe_load(test.read_text())
    fixed = _fixed_annotations(groups)
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            assert check["alertname"] in fixed, f"{test.name}: no rule {check['alertname']}"
            for alert in check.get("exp_alerts") or []:
                alert["exp_annotations"] = {**fixed[check["alertname"]],
                                            **alert["exp_annotations"]}
    doc["rule_files"] = ["rules.yml"]
    out = work / test.name
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def test_there_are_rule_tests_for_at_least_three_rules():
    names = {c["alertname"] for t in TESTS for case in yaml.safe_load(t.read_text())["tests"]
             for c in case.get("alert_rule_test", []) if c.get("exp_alerts")}
    assert len(names) >= 3, names


def test_the_rules_pass_promtool_check(tmp_path):
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(_rule_file()))
    done = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "rules.yml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    count = sum(len(g["rules"]) for g in _rule_file()["groups"])
    assert f"SUCCESS: {count} rules found" in done.stdout


@pytest.mark.parametrize("test", TESTS, ids=[t.stem for t in TESTS])
def test_rules(test, tmp_path):
    prepared = _prepare(test, tmp_path)
    done = subprocess.run([PROMTOOL, "test", "rules", prepared.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_changed_threshold_changes_when_the_rule_fires(tmp_path):
    """The same KV-cache series at 0.97 fires nothing when the threshold is 0.98."""
    out = render.manifests({"namespace": "llm", "servers": SERVERS[:1], "dashboard": False,
                            "thresholds": {"kv_cache_usage": 0.98}})
    groups = next(m for m in out if m["kind"] == "PrometheusRule")["spec"]["groups"]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    doc = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": 'vllm:kv_cache_usage_perc{namespace="llm",'
                                    'service="tiny-metrics",pod="p"}', "values": "0.97x30"}],
        "alert_rule_test": [{"eval_time": "25m", "alertname": "VllmKvCacheNearlyFull",
                             "exp_alerts": []}]}]}
    (tmp_path / "t.yml").write_text(yaml.safe_dump(doc))
    done = subprocess.run([PROMTOOL, "test", "rules", "t.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rules.THRESHOLDS["kv_cache_usage"][0] < 0.97 < 0.98
