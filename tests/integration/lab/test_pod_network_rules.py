"""The pod network's rules on their own: address pool, rewriting, $(VAR) expansion,
probe timing, the router's timeout annotation (no lab needed; kept beside the lab tests
that exercise the same rules end to end)."""

from __future__ import annotations

import pytest
from gpu_lab.controllers.pod_network import (
    LoopbackPool,
    ServiceResolver,
    Target,
    _listening_addresses,
    rewrite,
    rewrite_env,
    service_refs,
)
from gpu_lab.controllers.probes import Timing
from gpu_lab.controllers.process_util import expand
from gpu_lab.routes import parse_timeout

pytestmark = pytest.mark.lab
HEAD = Target("127.0.0.7", {6379: 6379, 80: 8000})


@pytest.mark.parametrize(("value", "expected"), [
    ("0.0.0.0", "127.0.0.9"),
    ("0.0.0.0:8000", "127.0.0.9:8000"),
    ("--host=0.0.0.0", "--host=127.0.0.9"),
    ("ray start --head --dashboard-host=0.0.0.0 --block",
     "ray start --head --dashboard-host=127.0.0.9 --block"),
    ("10.0.0.0.1", "10.0.0.0.1"),
    ("10.0.0.0", "10.0.0.0"),
    ("0.0.0.0.5", "0.0.0.0.5"),
])
def test_any_address_becomes_the_pod_ip(value: str, expected: str) -> None:
    assert rewrite(value, "127.0.0.9", {}) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("rc-head-svc.llm.svc.cluster.local", "127.0.0.7"),
    ("rc-head-svc.llm.svc.cluster.local:6379", "127.0.0.7:6379"),
    ("rc-head-svc.llm.svc:80", "127.0.0.7:8000"),  # service port -> targetPort
    ("http://rc-head-svc.llm.svc:80/v1", "http://127.0.0.7:8000/v1"),
    ("ray start --address=rc-head-svc.llm.svc.cluster.local:6379 --num-gpus=2 --block",
     "ray start --address=127.0.0.7:6379 --num-gpus=2 --block"),
    ("rc-head-svc.llm.svc:9999", "127.0.0.7:9999"),  # not a service port: kept
    ("rc-head-svc.llm.svc.example.com", "rc-head-svc.llm.svc.example.com"),
    ("other.llm.svc.cluster.local", "other.llm.svc.cluster.local"),  # unknown: kept
    ("x.rc-head-svc.llm.svc", "x.rc-head-svc.llm.svc"),
])
def test_service_names_become_the_target(value: str, expected: str) -> None:
    assert rewrite(value, "127.0.0.9", {("rc-head-svc", "llm"): HEAD}) == expected


def test_service_refs_and_env_interface() -> None:
    refs = service_refs(["--address=a.ns1.svc.cluster.local:6379", "http://b.ns2.svc/x",
                         "a.ns1.svc", "nothing.here"])
    assert refs == [("a", "ns1", "a.ns1.svc.cluster.local"), ("b", "ns2", "b.ns2.svc")]
    assert rewrite_env("eth0", "127.0.0.9", {}) == "lo"
    assert rewrite_env("eth0,eth1", "127.0.0.9", {}) == "eth0,eth1"


def test_resolver_prefers_ready_running_pods_and_the_pod_itself() -> None:
    def pod(name: str, ip: str | None, ready: bool, labels: dict[str, str]) -> dict:
        status = {"phase": "Running" if ip else "Pending", "conditions": [
            {"type": "Ready", "status": "True" if ready else "False"}]}
        if ip:
            status["podIP"] = ip
        return {"metadata": {"name": name, "namespace": "ns", "labels": labels},
                "spec": {"containers": [{"name": "c", "ports": [
                    {"name": "api", "containerPort": 8000}]}]}, "status": status}

    pods = [pod("a", "127.0.0.3", False, {"app": "x"}),
            pod("b", "127.0.0.4", True, {"app": "x"}),
            pod("c", None, False, {"app": "x"})]
    services = {"x": {"metadata": {"name": "x", "namespace": "ns"}, "spec": {
        "selector": {"app": "x"}, "ports": [{"port": 80, "targetPort": "api"}]}},
        "self": {"metadata": {"name": "self", "namespace": "ns"}, "spec": {
            "selector": {"app": "me"}, "ports": [{"port": 6379}]}}}
    resolver = ServiceResolver(lambda g, p, ns, name: services.get(name),
                               lambda g, p, ns: pods)
    me = pod("me", "127.0.0.9", False, {"app": "me"})
    targets, missing = resolver.resolve(me, ["x.ns.svc:80", "self.ns.svc.cluster.local",
                                             "gone.ns.svc"])
    assert targets[("x", "ns")] == Target("127.0.0.4", {80: 8000})
    assert targets[("self", "ns")] == Target("127.0.0.9", {6379: 6379})
    assert missing == ['"gone.ns.svc" (no Service ns/gone)']
    pods[1]["status"]["conditions"][0]["status"] = "False"
    assert resolver.resolve(me, ["x.ns.svc"])[0][("x", "ns")].ip == "127.0.0.3"
    pods[:2] = []
    assert resolver.resolve(me, ["x.ns.svc"])[1] == [
        '"x.ns.svc" (no running pod selected by Service ns/x)']


def test_loopback_pool_is_unique_skips_busy_addresses_and_reuses_freed_ones() -> None:
    busy = {"127.0.0.3"}
    pool = LoopbackPool(busy=lambda: busy)
    first, second = pool.allocate("u1"), pool.allocate("u2")
    assert (first, second) == ("127.0.0.2", "127.0.0.4")
    assert pool.allocate("u1") == first
    pool.release("u1")
    assert pool.allocate("u3") == first
    assert not pool.reserve("u4", second) and pool.reserve("u2", second)
    many = LoopbackPool(busy=set)
    ips = [many.allocate(str(i)) for i in range(300)]
    assert len(set(ips)) == 300 and "127.0.0.255" not in ips and "127.0.1.0" not in ips


def test_var_references_expand_like_kubernetes() -> None:
    env = {"POD_IP": "127.0.0.5", "PORT": "6379"}
    assert expand("--node-ip-address=$(POD_IP)", env) == "--node-ip-address=127.0.0.5"
    assert expand("$(POD_IP):$(PORT)", env) == "127.0.0.5:6379"
    assert expand("$$(POD_IP) $(MISSING) $HOME", env) == "$(POD_IP) $(MISSING) $HOME"


def test_probe_timing_is_scaled_with_bounds() -> None:
    timing = Timing.of({"initialDelaySeconds": 20, "periodSeconds": 10, "timeoutSeconds": 5,
                        "failureThreshold": 180}, 0.02)
    assert (timing.delay, timing.period, timing.timeout, timing.failures, timing.successes
            ) == (pytest.approx(0.4), pytest.approx(0.2), 0.5, 180, 1)
    # checked every 0.2 s, but 180 failures take 179 periods of at least 1 s
    assert timing.tick == 1.0 and not timing.reached(180, 178.9) and timing.reached(180, 179)
    assert timing.reached(1, 0.0)
    real = Timing.of({}, 1.0)
    assert (real.delay, real.period, real.timeout, real.failures) == (0.0, 1.0, 1.0, 3)
    assert real.tick == 10.0 and real.reached(3, 20.0) and not real.reached(3, 19.0)
    assert Timing.of({"periodSeconds": 1}, 0.001).period == 0.05


@pytest.mark.parametrize(("value", "seconds"), [
    ("600s", 600.0), ("10m", 600.0), ("1h", 3600.0), ("500ms", 0.5), ("2000", 2.0),
    ("1.5s", 1.5), ("", 30.0), (None, 30.0), ("soon", 30.0), ("0s", 30.0)])
def test_route_timeout_annotation_values(value: str | None, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)


def test_listening_addresses_read_from_procfs(tmp_path) -> None:
    head = "  sl  local_address rem_address   st tx_queue rx_queue\n"
    (tmp_path / "tcp").write_text(
        head + "   0: 3200007F:1F90 00000000:0000 0A 00000000:00000000\n"
        "   1: 3300007F:1F90 0100007F:9C40 01 00000000:00000000\n")
    (tmp_path / "tcp6").write_text(
        head + "   0: 0000000000000000FFFF00003C00007F:2711 00000000000000000000000000000000"
        ":0000 0A 00000000:00000000\n"
        "   1: 00000000000000000000000001000000:0016 00000000000000000000000000000000"
        ":0000 0A 00000000:00000000\n")
    assert _listening_addresses(tmp_path) == {"127.0.0.50", "127.0.0.60"}
