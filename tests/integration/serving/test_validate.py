"""Stage 6 against the real vLLM of the session (``served_model``): llm_endpoint_check,
llm_load_test and the validate role run through ansible-playbook; results are read back
independently (vLLM's own answers and Prometheus counters, the report file, the requests
that the lab's router passed to the Route's pod, Ray asked from inside a lab pod)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import statistics
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from integration.lab.waiting import wait_for
from integration.playbook import REPO, run_module, run_playbook
from routed import RoutedEndpoint, route_to
from serving_procs import free_ports

pytestmark = [pytest.mark.lab, pytest.mark.slow]

CHECKS = ["health", "models", "completion", "chat", "stream", "auth"]


# --- running Ansible (the shared runner; no cluster credentials) ---------------------------
def _role(tmp_path: Path, role_vars: dict, *extra: str, json_out: bool = False):
    # imported (static), so --tags select the role's tasks
    task = {"name": "validate",
            "ansible.builtin.import_role": {"name": "llmops.gpu_stack.validate"}}
    return run_playbook(tmp_path, [task], extra=extra, json_out=json_out, vars_file=role_vars)


# --- independent reads of vLLM ------------------------------------------------------------
def _http(url: str, api_key: str | None = None, body: dict | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _counter(endpoint: dict, name: str) -> float:
    """Sum of a vLLM Prometheus counter over its labels (``/metrics`` needs a key too)."""
    status, text = _http(f"{endpoint['base_url']}/metrics", endpoint["api_key"])
    assert status == 200, text[-500:]
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+]+)$", re.MULTILINE)
    return sum(float(m.group(2)) for m in pattern.finditer(text))


@pytest.fixture(scope="module")
def endpoint(served_model) -> dict:
    root = served_model.base_url.removesuffix("/v1")
    return {"base_url": root, "api_key": served_model.api_key, "model": "tiny",
            "wait_timeout": 30}


# --- llm_endpoint_check ---------------------------------------------------------------------
def test_every_smoke_check_passes_with_the_api_key(endpoint, tmp_path):
    rc, result, out = run_module(tmp_path, "llm_endpoint_check", {**endpoint, "max_tokens": 12})
    assert rc == 0, out[-3000:]
    assert result["changed"] is False
    assert [c["name"] for c in result["checks"]] == CHECKS
    assert all(c["ok"] for c in result["checks"]), result["checks"]
    by_name = {c["name"]: c for c in result["checks"]}
    assert by_name["auth"]["status"] == 401 and not by_name["auth"].get("skipped")
    assert 0 < by_name["completion"]["completion_tokens"] <= 12
    assert by_name["stream"]["chunks"] >= 2 and by_name["stream"]["done"] is True
    assert result["api_url"] == endpoint["base_url"] + "/v1"
    # vLLM itself: the same greedy completion, and the model list
    status, body = _http(f"{endpoint['base_url']}/v1/completions", endpoint["api_key"],
                         {"model": "tiny", "prompt": "The capital of France is",
                          "max_tokens": 12, "temperature": 0})
    assert status == 200
    assert result["sample_completion"] == json.loads(body)["choices"][0]["text"]
    assert by_name["stream"]["text"] == result["sample_completion"]
    _status, models = _http(f"{endpoint['base_url']}/v1/models", endpoint["api_key"])
    assert result["served_models"] == [m["id"] for m in json.loads(models)["data"]]


def test_a_wrong_api_key_is_refused_with_401(endpoint, tmp_path):
    rc, result, out = run_module(tmp_path, "llm_endpoint_check",
                                 {**endpoint, "api_key": "not-the-key"})
    assert rc != 0, out[-3000:]
    assert "endpoint check 'models' failed" in result["msg"]
    assert "HTTP 401" in result["msg"] and result["status"] == 401
    assert [(c["name"], c["ok"]) for c in result["checks"]] == [("health", True),
                                                                ("models", False)]
    # and vLLM does refuse that key
    assert _http(f"{endpoint['base_url']}/v1/models", "not-the-key")[0] == 401


def test_a_wrong_model_name_fails_naming_v1_models(endpoint, tmp_path):
    rc, result, out = run_module(tmp_path, "llm_endpoint_check",
                                 {**endpoint, "model": "no-such-model"})
    assert rc != 0, out[-3000:]
    assert "GET /v1/models does not list model 'no-such-model' (served: tiny)" in result["msg"]
    assert result["check"] == "models" and result["served"] == ["tiny"]


def test_an_unreachable_endpoint_is_retried_until_wait_timeout(tmp_path):
    (port,) = free_ports(1)
    start = time.monotonic()
    rc, result, out = run_module(tmp_path, "llm_endpoint_check", {
        "base_url": f"http://127.0.0.1:{port}", "model": "tiny", "wait_timeout": 4})
    elapsed = time.monotonic() - start
    assert rc != 0, out[-3000:]
    assert result["msg"].startswith("endpoint check 'health' failed: timed out after 4s")
    assert "cannot connect" in result["msg"]
    assert 4 <= elapsed < 60


# --- through the lab's router (edge TLS, the lab CA), which routes by Host ----------------
@pytest.fixture(scope="module")
def router(endpoint, lab, tmp_path_factory) -> RoutedEndpoint:
    """Route llm (namespace edge) of the module's lab to the session's vLLM."""
    server, core = lab
    upstream = endpoint["base_url"].removeprefix("http://")
    return route_to(server, core, upstream, tmp_path_factory.mktemp("route"))


def test_through_the_lab_router_with_host_header_and_ca(endpoint, router, tmp_path):
    args = {**endpoint, "base_url": router.url, "host_header": router.host,
            "ca_path": router.ca, "wait_timeout": 60, "max_tokens": 4}
    router.clear()
    router.refuse(3)  # the Route serves after three 503s
    rc, result, out = run_module(tmp_path, "llm_endpoint_check", args)
    assert rc == 0, out[-3000:]
    assert all(c["ok"] for c in result["checks"]) and len(result["checks"]) == 6
    health = result["checks"][0]
    arrivals = router.arrivals()  # what the router passed to the Route's pod
    refused = [a for a in arrivals if a["refused"]]
    assert [(a["method"], a["path"]) for a in refused] == [("GET", "/health")] * 3
    assert health["waited_s"] >= 2  # 1 s + 1.5 s between tries
    assert len(arrivals) >= 9
    assert {a["forwarded_host"] for a in arrivals} == {router.host}


@pytest.mark.parametrize(("change", "why"), [
    ({"ca_path": None}, "system trust store"),
    ({"host_header": "llm.not-the-apps-domain.test"}, "the certificate lacks that name")])
def test_tls_failures_are_not_retried(endpoint, router, tmp_path, change, why):
    args = {**endpoint, "base_url": router.url, "host_header": router.host,
            "ca_path": router.ca, "wait_timeout": 60}
    args = {k: v for k, v in {**args, **change}.items() if v is not None}
    router.refuse(0)
    router.clear()
    start = time.monotonic()
    rc, result, out = run_module(tmp_path, "llm_endpoint_check", args)
    assert rc != 0, f"{why}: {out[-3000:]}"
    assert "endpoint check 'health' failed: GET /health: TLS verification failed" in result["msg"]
    assert result["tls"] is True
    assert router.arrivals() == []  # nothing got past the TLS handshake
    assert time.monotonic() - start < 40  # failed at once, not after wait_timeout


# --- llm_load_test --------------------------------------------------------------------------
def test_load_test_report_matches_its_requests(endpoint, tmp_path):
    out_dir = tmp_path / "out" / "new"  # created by the module
    tokens_before = _counter(endpoint, "vllm:generation_tokens_total")
    requests_before = _counter(endpoint, "vllm:request_success_total")
    rc, result, out = run_module(tmp_path, "llm_load_test", {
        **endpoint, "requests": 12, "concurrency": 3, "max_tokens": 16,
        "report_path": str(out_dir / "load.json"), "chart_path": str(out_dir / "load.png")})
    assert rc == 0, out[-3000:]
    assert result["changed"] is False and result["report"] == str(out_dir / "load.json")
    report = json.loads((out_dir / "load.json").read_text())
    results = report["results"]
    assert [r["index"] for r in results] == list(range(12))
    assert all(r["ok"] and r["status"] == 200 for r in results)
    assert all(r["completion_tokens"] > 0 and r["tokens_source"] == "usage" for r in results)
    assert all(0 < r["ttft_ms"] < r["latency_ms"] for r in results)
    # vLLM's own counters saw exactly these requests and tokens
    assert _counter(endpoint, "vllm:request_success_total") - requests_before == 12
    assert (_counter(endpoint, "vllm:generation_tokens_total") - tokens_before
            == report["output_tokens"] == sum(r["completion_tokens"] for r in results))
    # percentiles recomputed independently (inclusive quantiles = linear interpolation)
    for key, field in (("latency_ms", "latency_ms"), ("ttft_ms", "ttft_ms")):
        values = [r[field] for r in results]
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        for q in (50, 95, 99):
            assert report[key][f"p{q}"] == pytest.approx(cuts[q - 1], abs=0.002)
        assert report[key]["max"] == pytest.approx(max(values), abs=0.002)
    assert report["counts"] == {"total": 12, "ok": 12, "failed": 0}
    assert report["requests_per_s"] == pytest.approx(12 / report["duration_s"], rel=0.01)
    assert report["settings"]["concurrency"] == 3 and "api_key" not in json.dumps(report)
    assert dt.datetime.fromisoformat(report["finished"]) > dt.datetime.fromisoformat(
        report["started"])
    summary = {k: v for k, v in report.items() if k != "results"}
    assert {k: v for k, v in result["summary"].items() if k != "line"} == summary
    png = (out_dir / "load.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert len(png) > 20_000


def test_load_test_at_a_fixed_rate_sends_on_schedule(endpoint, router, tmp_path):
    """rate=4 with room for all 6 requests at once: the Route's pod sees them 0.25 s
    apart, where a closed loop would send all 6 together."""
    router.refuse(0)
    router.clear()
    rc, result, out = run_module(tmp_path, "llm_load_test", {
        **endpoint, "base_url": router.url, "host_header": router.host,
        "ca_path": router.ca, "requests": 6, "concurrency": 6, "rate": 4,
        "max_tokens": 2, "report_path": str(tmp_path / "load.json")})
    assert rc == 0, out[-3000:]
    sent = [a["at"] for a in router.arrivals()
            if (a["method"], a["path"]) == ("POST", "/v1/completions")]
    assert len(sent) == 6
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    assert min(gaps) > 0.15, gaps
    assert 1.2 < sent[-1] - sent[0] < 3.0, gaps
    report = json.loads((tmp_path / "load.json").read_text())
    assert report["settings"]["rate"] == 4.0 and report["counts"]["ok"] == 6
    assert "at concurrency 6, 4 requests/s scheduled;" in result["summary"]["line"]


def test_load_test_fails_above_the_error_rate(endpoint, tmp_path):
    rc, result, out = run_module(tmp_path, "llm_load_test", {
        **endpoint, "api_key": "not-the-key", "requests": 3, "concurrency": 3,
        "report_path": str(tmp_path / "load.json"), "wait_timeout": 5})
    assert rc != 0, out[-3000:]
    assert "3 of 3 requests failed" in result["msg"] and "HTTP 401" in result["msg"]
    report = json.loads((tmp_path / "load.json").read_text())  # written before failing
    assert [r["status"] for r in report["results"]] == [401, 401, 401]


def test_check_mode_sends_no_load_and_writes_nothing(endpoint, tmp_path):
    before = _counter(endpoint, "vllm:request_success_total")
    out_dir = tmp_path / "reports"
    rc, result, out = run_module(tmp_path, "llm_load_test", {
        **endpoint, "requests": 5, "report_path": str(out_dir / "load.json"),
        "chart_path": str(out_dir / "load.png")}, extra=("--check",))
    assert rc == 0, out[-3000:]
    assert result["summary"] == {} and result["changed"] is False
    assert "check mode" in result["msg"]
    assert not out_dir.exists()
    # the role in check mode: the smoke test's three generations, no load
    rc, _results, out = _role(tmp_path, {
        "validate_base_url": endpoint["base_url"], "validate_api_key": endpoint["api_key"],
        "validate_model": "tiny", "validate_gpu_check": False,
        "validate_report_dir": str(out_dir)}, "--check")
    assert rc == 0, out[-3000:]
    assert "load test: not run" in out and "smoke: health, models, completion" in out
    assert not out_dir.exists()
    assert _counter(endpoint, "vllm:request_success_total") - before == 3


def test_the_role_and_no_api_key_in_verbose_output(endpoint, router, tmp_path):
    key = endpoint["api_key"]
    router.refuse(0)
    report_dir = tmp_path / "report"
    role_vars = {"validate_base_url": router.url, "validate_host_header": router.host,
                 "validate_ca_path": router.ca, "validate_api_key": key,
                 "validate_model": "tiny", "validate_gpu_check": False,
                 "validate_requests": 4, "validate_concurrency": 2, "validate_max_tokens": 8,
                 "validate_rate": 8, "validate_report_dir": str(report_dir)}
    rc, _results, out = _role(tmp_path, role_vars, "-vvv")
    assert rc == 0, out[-3000:]
    assert "4/4 ok at concurrency 2, 8 requests/s scheduled" in out and "load-test.png" in out
    assert json.loads((report_dir / "load-test.json").read_text())["settings"]["rate"] == 8
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in out  # -vvv did print the arguments
    assert key not in out
    assert key not in (report_dir / "load-test.json").read_text()
    # a failing run (wrong model) prints its arguments and errors too: still no key
    rc, _results, out = _role(tmp_path, {**role_vars, "validate_model": "other"}, "-vvv")
    assert rc != 0 and "does not list model 'other'" in out
    assert key not in out
    # only the smoke test under its tag: no new report
    (report_dir / "load-test.json").unlink()
    rc, _results, out = _role(tmp_path, role_vars, "--tags", "smoke")
    assert rc == 0, out[-3000:]
    assert not (report_dir / "load-test.json").exists()


# --- the GPU check: Ray asked from inside a lab pod -----------------------------------------
def _pod(name: str, node_type: str, gpus: int, command: list | None = None) -> dict:
    container = {"name": f"ray-{node_type}", "image": "registry.example.com/llmops/ray-vllm:0.1.0"}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    if command:
        container["command"] = command  # a process pod: pods/exec runs commands locally
    labels = {"app.kubernetes.io/instance": "llm", "ray.io/cluster": "llm-0",
              "ray.io/node-type": node_type}
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": "ocp-worker-0", "containers": [container]}}


def _wait_running(core, namespace: str, count: int) -> None:
    def running() -> list:
        pods = core.list_namespaced_pod(namespace).items
        return len(pods) == count and all(p.status.phase == "Running" for p in pods) and pods

    wait_for(running, f"{count} pods running in {namespace}", timeout=60, interval=0.5)


@pytest.fixture(scope="module")
def lab(k8s_lab_factory):
    """A lab API server with the namespace llm; (server, CoreV1Api)."""
    from kubernetes import client, config

    server = k8s_lab_factory(workers=2)
    core = client.CoreV1Api(config.new_client_from_config(server.kubeconfig,
                                                          context="lab-admin"))
    core.create_namespace({"metadata": {"name": "llm"}})
    return server, core


def test_api_key_read_from_its_secret(endpoint, lab, tmp_path):
    server, core = lab
    core.create_namespaced_secret("llm", {"metadata": {"name": "llm-api-key"},
                                          "stringData": {"api-key": endpoint["api_key"]}})
    role_vars = {"validate_base_url": endpoint["base_url"], "validate_model": "tiny",
                 "validate_api_key_secret": "llm-api-key",
                 "validate_k8s_auth": {"kubeconfig": server.kubeconfig, "context": "lab-admin"}}
    rc, _results, out = _role(tmp_path, role_vars, "--tags", "smoke", "-v")
    assert rc == 0, out[-3000:]
    assert "smoke: health, models, completion, chat, stream, auth" in out
    assert endpoint["api_key"] not in out
    rc, _results, out = _role(tmp_path, {**role_vars, "validate_api_key_secret_key": "token"},
                              "--tags", "smoke")
    assert rc != 0 and "no key token in Secret llm/llm-api-key" in out


def test_gpu_check_asks_ray_inside_the_head_pod(served_model, endpoint, lab, tmp_path):
    server, core = lab
    # the session's Ray cluster: head with 1 GPU, worker with 1 GPU (serving conftest)
    core.create_namespaced_pod("llm", _pod("llm-0-head", "head", 1, ["sleep", "900"]))
    core.create_namespaced_pod("llm", _pod("llm-0-worker-0", "worker", 1, ["sleep", "900"]))
    _wait_running(core, "llm", 2)
    defaults = yaml.safe_load((REPO / "roles/validate/defaults/main.yml").read_text())
    # pods/exec in the lab passes no pod environment; a KubeRay head has RAY_ADDRESS set
    command = f"env RAY_ADDRESS={served_model.ray_address} {defaults['validate_gpu_command']}"
    role_vars = {"validate_base_url": endpoint["base_url"], "validate_model": "tiny",
                 "validate_k8s_auth": {"kubeconfig": server.kubeconfig, "context": "lab-admin"},
                 "validate_gpu_command": command}
    rc, _results, out = _role(tmp_path, role_vars, "--tags", "gpu")
    assert rc == 0, out[-4000:]
    assert "Ray cluster llm-0: 2 GPUs, as given" in out
    assert "GPUs: Ray cluster llm-0: 2 GPUs, as given" in out

    # one more worker pod with a GPU Ray does not have: 3 given, Ray reports 2
    core.create_namespaced_pod("llm", _pod("llm-0-worker-1", "worker", 1))
    _wait_running(core, "llm", 3)
    rc, _results, out = _role(tmp_path, role_vars, "--tags", "gpu")
    assert rc != 0
    assert 'Ray cluster llm-0: the pods are given 3 nvidia.com/gpu but llm-0-head reports "2"' \
        in out

    # per pod (as with nvidia-smi): every pod with GPUs is asked for its own count
    rc, _results, out = _role(tmp_path, {**role_vars, "validate_gpu_scope": "pod",
                                         "validate_gpu_command": "sh -c 'echo 1'"},
                              "--tags", "gpu")
    assert rc != 0  # llm-0-worker-1 is not a process pod: exec fails there
    assert "pod llm-0-head: 1 GPUs, as given" in out
    assert "pod llm-0-worker-0: 1 GPUs, as given" in out
    assert "pod llm-0-worker-1: the pods are given 1 nvidia.com/gpu but llm-0-worker-1" in out
