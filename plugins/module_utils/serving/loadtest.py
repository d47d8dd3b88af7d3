# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Load-test arithmetic and the report: percentiles, summary, error rate, JSON and PNG.

Pure functions over the per-request records the load runner (``serving/endpoint.py``)
produces; nothing here touches the network. A record is a dict with ``index``, ``ok``,
``status`` (HTTP status, ``None`` when no response came), ``start_s`` (seconds after
the run started), ``latency_ms``, ``ttft_ms`` (time to the first streamed chunk,
``None`` without streaming), ``completion_tokens``, ``tokens_source`` (``usage`` or
``chunks``) and ``error`` (text, ``None`` when ok).

API
---
``percentile(values, q)``: the q-th percentile (0-100) with linear interpolation between
    the closest ranks (the usual "linear" definition, as numpy's default).
``distribution(values)``: count, min, mean, p50, p95, p99, max (ms, rounded to 0.001).
``build_report(results, settings, started, finished, duration_s)``: the report dict.
``check_error_rate(report, max_error_rate)``: raises ``OperationFailedError`` when the
    share of failed requests is above the limit.
``summary_line(report)``, ``write_report(report, path)``, ``write_chart(report, path)``
    (matplotlib, imported only there, Agg backend), ``require_chart_support()``,
    ``check_output_path(path, what)``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import tempfile
from datetime import datetime

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
    OperationFailedError,
)

REPORT_FORMAT = 1
MAX_ERROR_SAMPLES = 5


def percentile(values, q: float) -> float | None:
    """The q-th percentile (0 <= q <= 100) of ``values``, linear interpolation; None if empty."""
    if not 0 <= q <= 100:
        raise ValueError("q must be between 0 and 100")
    data = sorted(float(v) for v in values)
    if not data:
        return None
    rank = (len(data) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def distribution(values) -> dict:
    """count, min, mean, p50, p95, p99 and max of ``values`` (None entries are skipped)."""
    data = [float(v) for v in values if v is not None]
    out = {"count": len(data)}
    out["min"] = _round(min(data)) if data else None
    out["mean"] = _round(sum(data) / len(data)) if data else None
    for q in (50, 95, 99):
        out[f"p{q}"] = _round(percentile(data, q))
    out["max"] = _round(max(data)) if data else None
    return out


def _error_samples(failed: list[dict]) -> list[dict]:
    seen, samples = set(), []
    for record in failed:
        key = (record.get("status"), record.get("error"))
        if key in seen:
            continue
        seen.add(key)
        samples.append({"index": record["index"], "status": record.get("status"),
                        "error": record.get("error")})
        if len(samples) == MAX_ERROR_SAMPLES:
            break
    return samples


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def build_report(results: list[dict], settings: dict, started: datetime, finished: datetime,
                 duration_s: float) -> dict:
    """The load-test report: settings, counts, latency/TTFT distributions, rates, errors.

    Percentiles and rates cover the successful requests; ``duration_s`` is the wall time
    of the whole run (monotonic clock), which the rates divide by.
    """
    ordered = sorted(results, key=lambda r: r["index"])
    ok = [r for r in ordered if r["ok"]]
    failed = [r for r in ordered if not r["ok"]]
    tokens = sum(int(r.get("completion_tokens") or 0) for r in ok)
    duration = max(float(duration_s), 1e-9)
    total = len(ordered)
    return {
        "format": REPORT_FORMAT,
        "started": _iso(started),
        "finished": _iso(finished),
        "duration_s": round(float(duration_s), 3),
        "settings": dict(settings),
        "counts": {"total": total, "ok": len(ok), "failed": len(failed)},
        "error_rate": round(len(failed) / total, 6) if total else 0.0,
        "latency_ms": distribution(r["latency_ms"] for r in ok),
        "ttft_ms": distribution(r.get("ttft_ms") for r in ok),
        "requests_per_s": round(len(ok) / duration, 3),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / duration, 3),
        "error_samples": _error_samples(failed),
        "results": ordered,
    }


def summary(report: dict) -> dict:
    """The report without its per-request records (what the module returns)."""
    out = {k: v for k, v in report.items() if k != "results"}
    out["line"] = summary_line(report)
    return out


def summary_line(report: dict) -> str:
    counts, lat, ttft = report["counts"], report["latency_ms"], report["ttft_ms"]
    settings = report["settings"]
    parts = [f"{counts['ok']}/{counts['total']} ok at concurrency "
             f"{settings.get('concurrency', '?')}"]
    if settings.get("rate"):
        parts[0] += f", {settings['rate']:g} requests/s scheduled"
    if lat["count"]:
        parts.append(f"latency p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, "
                     f"p99 {lat['p99']:.0f} ms")
    if ttft["count"]:
        parts.append(f"TTFT p50 {ttft['p50']:.0f} ms, p95 {ttft['p95']:.0f} ms")
    parts.append(f"{report['requests_per_s']:.2f} req/s, "
                 f"{report['output_tokens_per_s']:.1f} output tokens/s")
    return "; ".join(parts)


def check_error_rate(report: dict, max_error_rate: float) -> None:
    """Raise when more requests failed than ``max_error_rate`` (0..1) allows."""
    if report["error_rate"] > max_error_rate:
        counts = report["counts"]
        first = report["error_samples"][0] if report["error_samples"] else {}
        raise OperationFailedError(
            f"load test: {counts['failed']} of {counts['total']} requests failed (error rate "
            f"{report['error_rate']:.3f} above the allowed {max_error_rate}); first error: "
            f"HTTP {first.get('status')}: {first.get('error')}",
            reason=first.get("error"), error_samples=report["error_samples"],
            summary=summary(report))


def check_output_path(path: str | None, what: str) -> None:
    """Refuse, before any load is sent, an output file that cannot be written.

    Missing directories are created when the file is written; the nearest existing one
    must be a writable directory.
    """
    if not path:
        return
    if os.path.isdir(path):
        raise InvalidInputError(f"{what} {path} is a directory")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InvalidInputError(f"{what} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK):
        raise InvalidInputError(f"{what} {path}: directory {parent} is not writable")


def has_chart_support() -> bool:
    """Whether matplotlib (the PNG chart's one dependency) can be imported here."""
    return importlib.util.find_spec("matplotlib") is not None


def require_chart_support() -> None:
    """Refuse a chart when matplotlib is missing (checked before any load is sent)."""
    if not has_chart_support():
        raise InvalidInputError(
            "chart_path needs the matplotlib Python package on the host the module runs on "
            "(it is pinned in the collection's pyproject.toml); install it or omit chart_path")


def _atomic_write(path: str, data: bytes) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_report(report: dict, path: str) -> None:
    _atomic_write(path, (json.dumps(report, indent=2, sort_keys=False) + "\n").encode())


def _shared_bins(values: list[float], most: int = 40) -> list[float]:
    """Bin edges covering every value, the same for latency and TTFT."""
    if not values:
        return [0.0, 1.0]
    low, high = min(values), max(values)
    count = min(most, max(5, len(values) // 2))
    width = (high - low) / count or 1.0
    return [low + width * i for i in range(count + 1)]


def write_chart(report: dict, path: str) -> None:
    """A PNG: per-request latency and TTFT over time (left), their histograms (right)."""
    require_chart_support()
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    results = report["results"]
    ok = [r for r in results if r["ok"]]
    failed = [r for r in results if not r["ok"]]
    fig, (timeline, hist) = plt.subplots(1, 2, figsize=(12, 5), dpi=100)
    try:
        timeline.scatter([r["start_s"] for r in ok], [r["latency_ms"] for r in ok],
                         s=14, label="latency")
        with_ttft = [r for r in ok if r.get("ttft_ms") is not None]
        if with_ttft:
            timeline.scatter([r["start_s"] for r in with_ttft],
                             [r["ttft_ms"] for r in with_ttft], s=14, marker="^", label="TTFT")
        if failed:
            timeline.scatter([r["start_s"] for r in failed], [r["latency_ms"] for r in failed],
                             s=30, marker="x", color="red", label="failed")
        timeline.set_xlabel("request start (s after the run began)")
        timeline.set_ylabel("ms")
        timeline.set_title("per request")
        timeline.legend(loc="best")
        series = [("latency", [r["latency_ms"] for r in ok])]
        if with_ttft:
            series.append(("TTFT", [r["ttft_ms"] for r in with_ttft]))
        edges = _shared_bins([v for _label, values in series for v in values])
        for label, values in series:
            hist.hist(values, bins=edges, alpha=0.6, label=label)
        for q, style in ((50, "--"), (95, ":")):
            value = report["latency_ms"].get(f"p{q}")
            if value is not None:
                hist.axvline(value, linestyle=style, color="black", linewidth=1,
                             label=f"latency p{q}")
        hist.set_xlabel("ms")
        hist.set_ylabel("requests")
        hist.set_title("distribution")
        hist.legend(loc="best")
        settings = report["settings"]
        fig.suptitle(f"{settings.get('model', '')} at {settings.get('endpoint', '')}\n"
                     f"{summary_line(report)}", fontsize=9)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    _atomic_write(path, buffer.getvalue())
