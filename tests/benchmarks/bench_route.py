"""Benchmark: the lab's Route (router) in front of vLLM vs vLLM straight, in one run.

Needs the main job's result: the lab running with the serving stack
(`.venv/bin/ansible-playbook playbooks/site.yml`). Reads the lab's router
(``$GPU_LAB_HOME/router.json``), the Route host, the head pod's address and the API key
(from the Secret) through the lab API, then measures with the collection's own
load-test code (the openai client), paired so that both paths see the same machine:

  1. each round sends the same open load straight to the head pod (``http://<pod
     IP>:8000``) and through the Route (HTTPS, lab CA, Host header) AT THE SAME TIME, one
     client process per path: each side sends ``--rate`` requests per second on a fixed
     schedule (llm_load_test's ``rate``), the two schedules interleaved half an interval
     apart, which side leads swapping every round. Arrivals do not wait for answers, as
     with real users, so a slower path gets no fewer requests, only slower ones.
     Per round and side: the p50 of each stream's output tokens/s (its tokens over its
     whole time, request to last byte) and of TTFT; the Route's ratio (target >= 0.95)
     and TTFT difference (target <= 5 ms);
  2. the control: the same rounds with both sides straight (what noise alone gives);
  3. unloaded round trip p50 (one short request at a time, the paths alternating): the
     router's own cost with TLS.

``--rate 0`` turns the rounds into a closed loop instead (``--concurrency`` per side,
each slot sending again as soon as it is answered), which saturates this 2-core machine:
there, vLLM, the router and both clients fight for the same two cores and the per-round
ratios swing 0.75-1.2 even in the control (at concurrency 2 per side: 16 rounds gave the
Route 0.889 with control 1.000; another run of 4 rounds 0.926 with control 0.874).
The client processes run at a raised priority (nice -10, when allowed) in both modes:
production clients do not share vLLM's CPU. The lab's router keeps normal priority.

  .venv/bin/python tests/benchmarks/bench_route.py [--rounds 10] [--requests 24]
      [--rate 2.5] [--concurrency 8] [--max-tokens 32] [--namespace llm] [--name llm]
      [--model tiny-llama]
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.endpoint import (  # noqa: E402
    LOAD_APIS,
    Endpoint,
    run_load,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.loadtest import (  # noqa: E402
    build_report,
)


def _targets(home: Path, ns: str, name: str, served: str) -> tuple[Endpoint, Endpoint]:
    # imported here: the client processes (and the GPU check's gateway benchmark, which
    # reuses the rounds below on a machine without the kubernetes package) never need it
    from kubernetes import client, config

    api = config.new_client_from_config(str(home / "kubeconfig"), context="lab-admin")
    core = client.CoreV1Api(api)
    route = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "route.openshift.io", "v1", ns, "routes", name)
    pods = core.list_namespaced_pod(ns, label_selector=f"app.kubernetes.io/instance={name},"
                                    "ray.io/node-type=head").items
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True"
                                    for c in p.status.conditions or [])]
    if not ready:
        sys.exit(f"no ready head pod of {ns}/{name}: run the main job first")
    secret = core.read_namespaced_secret(f"{name}-api-key", ns)
    key = base64.b64decode(secret.data["api-key"]).decode()
    router = json.loads((home / "router.json").read_text())
    direct = Endpoint(base_url=f"http://{ready[0].status.pod_ip}:8000", model=served,
                      api_key=key, timeout=120)
    routed = Endpoint(base_url=router["url"], model=served, api_key=key, ca_path=router["ca"],
                      host_header=route["spec"]["host"], timeout=120)
    return direct, routed


def _round(ep: Endpoint, requests: int, concurrency: int, max_tokens: int,
           rate: float | None = None, start_at: float = 0.0, api: str = "completions") -> dict:
    time.sleep(max(0.0, start_at - time.time()))
    records, started, finished, duration = run_load(
        ep, requests=requests, concurrency=concurrency, prompt="The quick brown fox",
        max_tokens=max_tokens, stream=True, ignore_eos=True, rate=rate, api=api)
    report = build_report(records, {"concurrency": concurrency}, started, finished, duration)
    if report["counts"]["failed"]:
        sys.exit(f"{ep.base_url}: {report['counts']['failed']} requests failed: "
                 f"{report['error_samples']}")
    return report


def _stream_tokens_per_s(report: dict) -> float:
    """p50 over the requests of one stream's output tokens/s (tokens over its whole time)."""
    return statistics.median(r["completion_tokens"] * 1000 / r["latency_ms"]
                             for r in report["results"])


def _paired(pool: ProcessPoolExecutor, sides: dict[str, Endpoint], args,
            leader: str) -> dict[str, dict]:
    """Both sides' loads at the same time, each from its own client process (no shared
    GIL); open: the same schedule, the side that is not ``leader`` half an interval later."""
    rate = args.rate or None
    start_at = time.time() + 0.5
    jobs = {label: pool.submit(_round, ep, args.requests, args.concurrency, args.max_tokens,
                               rate, start_at + (0.5 / rate if rate and label != leader
                                                 else 0.0), args.api)
            for label, ep in sides.items()}
    return {label: job.result() for label, job in jobs.items()}


def _raise_priority() -> None:
    try:
        os.nice(-10)
    except OSError as exc:
        print(f"client process at normal priority ({exc}): the client's own CPU counts")


def _unloaded(direct: Endpoint, routed: Endpoint, blocks: int,
              api: str = "completions") -> dict[str, float]:
    """p50 latency of one-token requests sent one at a time on a kept-alive connection,
    in blocks of 8 per path, the paths alternating."""
    p50: dict[str, list[float]] = {"direct": [], "route": []}
    for i in range(blocks):
        order = [("direct", direct), ("route", routed)]
        for label, ep in order if i % 2 == 0 else order[::-1]:
            p50[label].append(_round(ep, 8, 1, 1, api=api)["latency_ms"]["p50"])
    return {label: statistics.median(values) for label, values in p50.items()}


def _rounds(pool: ProcessPoolExecutor, first: Endpoint, second: Endpoint, args,
            label: str) -> dict[str, float]:
    """Paired rounds of first (as "direct") vs second (as "route"); medians over the
    rounds of second/first (stream tokens/s p50, total tokens/s) and second - first
    (TTFT p50)."""
    per_round: dict[str, list[float]] = {"stream": [], "total": [], "ttft": []}
    for i in range(args.rounds):
        reports = _paired(pool, {"direct": first, "route": second}, args,
                          leader=("direct", "route")[i % 2])
        stream = {k: _stream_tokens_per_s(r) for k, r in reports.items()}
        total = {k: r["output_tokens_per_s"] for k, r in reports.items()}
        ttft = {k: r["ttft_ms"]["p50"] for k, r in reports.items()}
        per_round["stream"].append(stream["route"] / stream["direct"])
        per_round["total"].append(total["route"] / total["direct"])
        per_round["ttft"].append(ttft["route"] - ttft["direct"])
        print(f"{label} round {i + 1}: stream tokens/s p50 {stream['direct']:.1f} vs "
              f"{stream['route']:.1f} (ratio {per_round['stream'][-1]:.3f}); TTFT p50 "
              f"{ttft['direct']:.1f} vs {ttft['route']:.1f} ms "
              f"({per_round['ttft'][-1]:+.1f} ms); total tokens/s {total['direct']:.0f} vs "
              f"{total['route']:.0f}")
    return {key: statistics.median(values) for key, values in per_round.items()}


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=24, help="per side and round")
    parser.add_argument("--rate", type=float, default=2.5,
                        help="requests/s per side (0: closed loop at --concurrency)")
    parser.add_argument("--concurrency", type=int, default=8, help="per side")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--namespace", default="llm")
    parser.add_argument("--name", default="tiny-llama", help="the serving release")
    parser.add_argument("--model", default="tiny-llama", help="served model name")
    parser.add_argument("--api", choices=LOAD_APIS, default="completions",
                        help="what the load streams: /v1/completions (default) or "
                             "/v1/chat/completions")
    args = parser.parse_args()
    if args.rate < 0 or min(args.rounds, args.requests, args.concurrency, args.max_tokens) < 1:
        parser.error("--rate must be >= 0; --rounds, --requests, --concurrency and "
                     "--max-tokens >= 1")
    home = Path(os.environ.get("GPU_LAB_HOME") or REPO / ".lab")
    direct, routed = _targets(home, args.namespace, args.name, args.model)
    print(f"straight: {direct.base_url}   through the Route: {routed.base_url} "
          f"(Host {routed.host_header})")
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_raise_priority)
    warm_up = argparse.Namespace(**{**vars(args), "requests": 4})
    _paired(pool, {"direct": direct, "route": routed}, warm_up, "direct")
    route = _rounds(pool, direct, routed, args, "straight vs Route")
    # The control: the same design with both sides straight shows what noise alone gives.
    control = _rounds(pool, direct, direct, args, "straight vs straight")
    pool.shutdown()
    rtt = _unloaded(direct, routed, 4, args.api)
    load = (f"open, {args.rate:g} requests/s per side on interleaved schedules" if args.rate
            else f"closed loop, concurrency {args.concurrency} per side")
    print(f"\nmedians over {args.rounds} paired rounds ({args.requests} requests x "
          f"{args.max_tokens} tokens per side, {load}, both sides at once):")
    print(f"  stream output tokens/s p50, through the Route / straight: {route['stream']:.3f} "
          f"(target >= 0.95: {_verdict(route['stream'] >= 0.95)}; control, straight / "
          f"straight: {control['stream']:.3f})")
    print(f"  TTFT p50 through the Route - straight: {route['ttft']:+.1f} ms "
          f"(target <= 5 ms: {_verdict(route['ttft'] <= 5)}; control: "
          f"{control['ttft']:+.1f} ms)")
    print(f"  total output tokens/s, Route / straight: {route['total']:.3f} (control "
          f"{control['total']:.3f}{'; open load: set by the schedule' if args.rate else ''})")
    print(f"  unloaded round trip p50 (1 token, kept-alive): straight {rtt['direct']:.1f} ms, "
          f"through the Route {rtt['route']:.1f} ms: {rtt['route'] - rtt['direct']:+.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
