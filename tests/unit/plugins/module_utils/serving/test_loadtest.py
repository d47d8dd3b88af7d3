"""Load-test arithmetic and report (serving/loadtest.py): known data, no network."""

from __future__ import annotations

import importlib.util
import json
import statistics
from datetime import UTC, datetime, timedelta

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
    OperationFailedError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import loadtest

T0 = datetime(2026, 11, 3, 12, 0, 0, tzinfo=UTC)


def _record(index, latency, ttft=None, tokens=32, ok=True, status=200, error=None):
    return {"index": index, "ok": ok, "status": status, "start_s": index * 0.1,
            "latency_ms": latency, "ttft_ms": ttft, "completion_tokens": tokens if ok else 0,
            "tokens_source": "usage" if ok else None, "error": error}


@pytest.mark.parametrize(("q", "expected"), [
    (0, 1.0), (50, 5.5), (95, 9.55), (99, 9.91), (100, 10.0), (25, 3.25)])
def test_percentile_on_one_to_ten(q, expected):
    assert loadtest.percentile(range(10, 0, -1), q) == pytest.approx(expected)


def test_percentile_agrees_with_the_standard_library():
    data = [12.5, 3.0, 99.0, 47.25, 8.0, 8.0, 61.0, 15.5, 0.5, 33.0, 71.0]
    # statistics.quantiles(method="inclusive") is the same linear interpolation
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    for q in (5, 50, 95, 99):
        assert loadtest.percentile(data, q) == pytest.approx(cuts[q - 1])


def test_percentile_edge_cases():
    assert loadtest.percentile([], 50) is None
    assert loadtest.percentile([7], 99) == 7.0
    with pytest.raises(ValueError):
        loadtest.percentile([1, 2], 101)


def test_distribution_skips_missing_values():
    dist = loadtest.distribution([None, 10, 20, None, 30])
    assert dist == {"count": 3, "min": 10.0, "mean": 20.0, "p50": 20.0, "p95": 29.0,
                    "p99": 29.8, "max": 30.0}
    assert loadtest.distribution([])["p50"] is None


def _report(results, duration=2.0):
    settings = {"endpoint": "https://llm.example", "model": "tiny", "concurrency": 4,
                "requests": len(results)}
    return loadtest.build_report(results, settings, T0, T0 + timedelta(seconds=duration),
                                 duration)


def test_report_fields_from_known_requests():
    ok = [_record(i, latency=100.0 * (i + 1), ttft=10.0 * (i + 1)) for i in range(8)]
    failed = [_record(8, latency=5.0, ok=False, status=500, error="boom"),
              _record(9, latency=6.0, ok=False, status=None, error="ConnectError: refused")]
    report = _report(list(reversed(ok + failed)), duration=4.0)
    assert [r["index"] for r in report["results"]] == list(range(10))
    assert report["counts"] == {"total": 10, "ok": 8, "failed": 2}
    assert report["error_rate"] == 0.2
    # percentiles over the successful requests only
    assert report["latency_ms"]["p50"] == 450.0
    assert report["latency_ms"]["p95"] == pytest.approx(765.0)
    assert report["latency_ms"]["min"] == 100.0 and report["latency_ms"]["max"] == 800.0
    assert report["ttft_ms"]["p99"] == pytest.approx(79.3)
    assert report["requests_per_s"] == 2.0
    assert report["output_tokens"] == 8 * 32
    assert report["output_tokens_per_s"] == 64.0
    assert report["started"] == "2026-11-03T12:00:00.000+00:00"
    assert report["finished"] == "2026-11-03T12:00:04.000+00:00"
    assert report["error_samples"] == [{"index": 8, "status": 500, "error": "boom"},
                                       {"index": 9, "status": None,
                                        "error": "ConnectError: refused"}]
    json.dumps(report)  # the report is JSON as it is


def test_error_samples_are_distinct_and_capped():
    failed = [_record(i, 1.0, ok=False, status=503, error="busy") for i in range(4)]
    failed += [_record(4 + i, 1.0, ok=False, status=500, error=f"e{i}") for i in range(9)]
    samples = _report(failed)["error_samples"]
    assert len(samples) == loadtest.MAX_ERROR_SAMPLES
    assert samples[0] == {"index": 0, "status": 503, "error": "busy"}
    assert [s["error"] for s in samples[1:]] == ["e0", "e1", "e2", "e3"]


def test_error_rate_limit():
    results = [_record(i, 50.0, 5.0) for i in range(19)]
    results.append(_record(19, 7.0, ok=False, status=429, error="too many"))
    report = _report(results)
    loadtest.check_error_rate(report, 0.05)  # 1 of 20 is exactly 5 %: allowed
    with pytest.raises(OperationFailedError) as err:
        loadtest.check_error_rate(report, 0.0)
    assert "1 of 20 requests failed" in err.value.msg
    assert "HTTP 429: too many" in err.value.msg
    assert err.value.details["summary"]["counts"]["failed"] == 1
    assert "results" not in err.value.details["summary"]
    loadtest.check_error_rate(_report([_record(0, 1.0)]), 0.0)


def test_summary_line_and_summary():
    report = _report([_record(i, 100.0 + i, 20.0) for i in range(5)], duration=1.0)
    line = loadtest.summary_line(report)
    assert line.startswith("5/5 ok at concurrency 4; latency p50 102 ms")
    assert "TTFT p50 20 ms" in line and "5.00 req/s" in line and "160.0 output tokens/s" in line
    assert loadtest.summary(report)["line"] == line
    nothing = _report([_record(0, 1.0, ok=False, status=500, error="x")])
    assert loadtest.summary_line(nothing).startswith("0/1 ok")
    report["settings"]["rate"] = 2.5
    assert loadtest.summary_line(report).startswith(
        "5/5 ok at concurrency 4, 2.5 requests/s scheduled; latency p50 102 ms")


def test_output_paths_are_checked(tmp_path):
    loadtest.check_output_path(str(tmp_path / "r.json"), "report_path")
    loadtest.check_output_path(str(tmp_path / "new" / "dir" / "r.json"), "report_path")
    loadtest.check_output_path(None, "report_path")
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidInputError, match="is not a directory"):
        loadtest.check_output_path(str(tmp_path / "file" / "r.json"), "report_path")
    with pytest.raises(InvalidInputError, match="is a directory"):
        loadtest.check_output_path(str(tmp_path), "chart_path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing created


def test_write_report_is_readable_json(tmp_path):
    report = _report([_record(i, 10.0 * (i + 1), 1.0) for i in range(3)])
    path = tmp_path / "reports" / "load.json"
    loadtest.write_report(report, str(path))  # the missing directory is created
    assert json.loads(path.read_text()) == report
    assert [p.name for p in path.parent.iterdir()] == ["load.json"]  # no temp file left


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_write_chart_makes_a_png(tmp_path):
    results = [_record(i, 100.0 + 7 * i, 10.0 + i) for i in range(12)]
    results.append(_record(12, 3.0, ok=False, status=500, error="x"))
    path = tmp_path / "load.png"
    loadtest.write_chart(_report(results), str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    assert int.from_bytes(data[16:20], "big") == 1200  # 12 in x 100 dpi
    assert len(data) > 10_000


def test_chart_without_matplotlib_is_refused(monkeypatch):
    monkeypatch.setattr(loadtest.importlib.util, "find_spec",
                        lambda name: None if name == "matplotlib" else object())
    with pytest.raises(InvalidInputError, match="matplotlib"):
        loadtest.require_chart_support()
