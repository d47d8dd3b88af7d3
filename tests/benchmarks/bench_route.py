"""Benchmark: the lab's Route (router) in front of vLLM vs vLLM straight, in one run.

Needs the main job's result: the lab running with the serving stack
(`.venv/bin/ansible-playbook playbooks/site.yml`). Reads the lab's router
(``$GPU_LAB_HOME/router.json``), the Route host, the head pod's address and the API key
(from the Secret) through the lab API, then alternates rounds of the same load straight
to the head pod (``http://<pod IP>:8000``) and through the Route (HTTPS, lab CA, Host
header) with the collection's own load-test code (the openai client), and prints:

  1. output tokens/s, straight vs through the Route (target: >= 95%, i.e. <= 5% loss);
  2. TTFT p50 at concurrency C, straight vs through the Route (target: <= 5 ms more);
  3. unloaded round trip p50 (one short request at a time): the router's own cost.

  .venv/bin/python tests/benchmarks/bench_route.py [--rounds 4] [--requests 24]
      [--concurrency 4] [--max-tokens 32] [--namespace llm] [--name llm] [--model tiny-llama]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.endpoint import (  # noqa: E402
    Endpoint,
    run_load,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.loadtest import (  # noqa: E402
    build_report,
)
from kubernetes import client, config  # noqa: E402


def _targets(home: Path, ns: str, name: str, served: str) -> tuple[Endpoint, Endpoint]:
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


def _round(ep: Endpoint, requests: int, concurrency: int, max_tokens: int) -> dict:
    records, started, finished, duration = run_load(
        ep, requests=requests, concurrency=concurrency, prompt="The quick brown fox",
        max_tokens=max_tokens, stream=True, ignore_eos=True)
    report = build_report(records, {"concurrency": concurrency}, started, finished, duration)
    if report["counts"]["failed"]:
        sys.exit(f"{ep.base_url}: {report['counts']['failed']} requests failed: "
                 f"{report['error_samples']}")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--namespace", default="llm")
    parser.add_argument("--name", default="llm")
    parser.add_argument("--model", default="tiny-llama", help="served model name")
    args = parser.parse_args()
    home = Path(os.environ.get("GPU_LAB_HOME") or REPO / ".lab")
    direct, routed = _targets(home, args.namespace, args.name, args.model)
    print(f"straight: {direct.base_url}   through the Route: {routed.base_url} "
          f"(Host {routed.host_header})")
    _round(direct, 4, 2, 4)  # warm both paths up (connections, vLLM's first requests)
    _round(routed, 4, 2, 4)
    tps = {"direct": [], "route": []}
    ttft = {"direct": [], "route": []}
    rtt = {"direct": [], "route": []}
    for i in range(args.rounds):
        order = [("direct", direct), ("route", routed)]
        for label, ep in order if i % 2 == 0 else order[::-1]:
            report = _round(ep, args.requests, args.concurrency, args.max_tokens)
            tps[label].append(report["output_tokens_per_s"])
            ttft[label].append(report["ttft_ms"]["p50"])
            single = _round(ep, 8, 1, 1)
            rtt[label].append(single["latency_ms"]["p50"])
        print(f"round {i + 1}: tokens/s straight {tps['direct'][-1]:.0f} route "
              f"{tps['route'][-1]:.0f}; TTFT p50 straight {ttft['direct'][-1]:.1f} ms route "
              f"{ttft['route'][-1]:.1f} ms")
    med = {k: {label: statistics.median(v[label]) for label in v} for k, v in
           (("tps", tps), ("ttft", ttft), ("rtt", rtt))}
    ratio = med["tps"]["route"] / med["tps"]["direct"]
    ttft_extra = med["ttft"]["route"] - med["ttft"]["direct"]
    rtt_extra = med["rtt"]["route"] - med["rtt"]["direct"]
    print(f"\nmedians over {args.rounds} rounds of {args.requests} requests x "
          f"{args.max_tokens} tokens at concurrency {args.concurrency}:")
    print(f"  output tokens/s: straight {med['tps']['direct']:.0f}, through the Route "
          f"{med['tps']['route']:.0f}: ratio {ratio:.3f} (target >= 0.95: "
          f"{'met' if ratio >= 0.95 else 'NOT met'})")
    print(f"  TTFT p50: straight {med['ttft']['direct']:.1f} ms, through the Route "
          f"{med['ttft']['route']:.1f} ms: {ttft_extra:+.1f} ms (target <= 5 ms: "
          f"{'met' if ttft_extra <= 5 else 'NOT met'})")
    print(f"  unloaded round trip p50 (1 token): straight {med['rtt']['direct']:.1f} ms, "
          f"through the Route {med['rtt']['route']:.1f} ms: {rtt_extra:+.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
