"""Benchmark: the LiteLLM gateway in front of vLLM vs vLLM straight, in one run.

Needs the main job's result: the lab running with the serving stack and the gateway
(`.venv/bin/ansible-playbook playbooks/site.yml`). Reads through the lab API the model's
head pod (what its Service selects), its API key, the gateway's pod and its master key
(from their Secrets), then measures with the collection's own load-test code (the openai
client) the same way as ``bench_route.py`` (whose paired rounds it reuses):

  1. paired rounds: each round sends the same open load straight to the model's pod
     (``http://<head pod IP>:8000``, the model's Service endpoint) and through the
     gateway's pod (``http://<gateway pod IP>:4000``, master key) AT THE SAME TIME, one
     client process per path, schedules interleaved, the leading side swapping every
     round. Per round and side: the p50 of each stream's output tokens/s and of TTFT;
     the gateway's ratio (target: within 5 %, >= 0.95) and TTFT difference (target
     <= 10 ms);
  2. the control: the same rounds with both sides straight (what noise alone gives);
  3. unloaded round trip p50 (one short request at a time, the paths alternating): the
     gateway's own cost per request.

Both sides are in-cluster addresses (the lab's pod IPs), so the router is in neither.

Measured on this 2-core machine (2026-12-06, LiteLLM 1.108.5, one worker): the targets are
NOT met here. Two short paired rounds (8 requests x 16 tokens per side at 2.5/s, the
session vLLM of tests/integration/serving behind a relay pod, the gateway pod of
test_gateway.py): stream tokens/s ratio 0.08, TTFT p50 +938 ms, unloaded round trip 21.6
vs 259 ms: the proxy, vLLM and both clients share two cores and LiteLLM's request path is
CPU-bound Python. Alone (a stub OpenAI backend on uvicorn, no vLLM running) LiteLLM adds
20-30 ms per non-streamed request here. Those figures were taken before the generated
configuration stopped LiteLLM from trying the Hugging Face hub for a tokenizer on requests
(``disable_hf_tokenizer_download``), which stalled requests here.

On a GPU machine (tests/gpu/results/gateway-2026-12-06.md: Llama 3 8B on vLLM on an
H100, LiteLLM on 4 cores of its own, the clients on 4 others) the targets are NOT met
either: stream tokens/s 0.86 of straight, TTFT p50 +56.5 ms, with 1 LiteLLM worker (0.88
and +48.5 ms with 4); the control 1.00 and +0.6 ms. The load streams ``/v1/completions``,
LiteLLM's slower path: against a stub server it added about 60 ms to the first token
there and about 15 ms on ``/v1/chat/completions``.

  .venv/bin/python tests/benchmarks/bench_gateway.py [--rounds 10] [--requests 24]
      [--rate 2.5] [--concurrency 8] [--max-tokens 32] [--namespace llm] [--name llm]
      [--gateway llm-gateway] [--model tiny-llama]

With ``--direct URL --through URL`` (keys in $BENCH_DIRECT_KEY and $BENCH_GATEWAY_KEY)
the two servers are given instead of read from the lab: the GPU check runs it so on the
GPU machine (tests/gpu/gateway.py), vLLM on the GPU and the gateway on its own cores.
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_route import (
    LOAD_APIS,
    REPO,
    Endpoint,
    _paired,
    _raise_priority,
    _rounds,
    _unloaded,
    _verdict,
)

GATEWAY_PORT = 4000


def _ready_pod_ip(core, ns: str, selector: str, what: str) -> str:
    pods = core.list_namespaced_pod(ns, label_selector=selector).items
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True"
                                    for c in p.status.conditions or [])]
    if not ready:
        sys.exit(f"no ready pod of {what} in {ns} ({selector}): run the main job first")
    return ready[0].status.pod_ip


def _secret(core, ns: str, name: str, key: str) -> str:
    return base64.b64decode(core.read_namespaced_secret(name, ns).data[key]).decode()


def targets(home: Path, ns: str, name: str, gateway: str, served: str) -> tuple:
    from kubernetes import client, config  # the lab's API; not needed with --direct

    api = config.new_client_from_config(str(home / "kubeconfig"), context="lab-admin")
    core = client.CoreV1Api(api)
    head = _ready_pod_ip(core, ns, f"app.kubernetes.io/instance={name},ray.io/node-type=head",
                         f"the model {name}")
    proxy = _ready_pod_ip(core, ns, f"app.kubernetes.io/name=llm-gateway,"
                          f"app.kubernetes.io/instance={gateway}", f"the gateway {gateway}")
    direct = Endpoint(base_url=f"http://{head}:8000", model=served,
                      api_key=_secret(core, ns, f"{name}-api-key", "api-key"), timeout=120)
    through = Endpoint(base_url=f"http://{proxy}:{GATEWAY_PORT}", model=served,
                       api_key=_secret(core, ns, f"{gateway}-master-key", "master-key"),
                       timeout=120)
    return direct, through


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
    parser.add_argument("--gateway", default="llm-gateway", help="the gateway's name")
    parser.add_argument("--model", default="tiny-llama", help="served model name")
    parser.add_argument("--api", choices=LOAD_APIS, default="completions",
                        help="what the load streams: /v1/completions (default) or "
                             "/v1/chat/completions")
    parser.add_argument("--direct", metavar="URL",
                        help="the model's server, given instead of read from the lab "
                             "(its key in $BENCH_DIRECT_KEY; tests/gpu/gateway.py)")
    parser.add_argument("--through", metavar="URL",
                        help="the gateway, with --direct (its master key in "
                             "$BENCH_GATEWAY_KEY)")
    args = parser.parse_args()
    if args.rate < 0 or min(args.rounds, args.requests, args.concurrency, args.max_tokens) < 1:
        parser.error("--rate must be >= 0; --rounds, --requests, --concurrency and "
                     "--max-tokens >= 1")
    if bool(args.direct) != bool(args.through):
        parser.error("--direct and --through go together")
    if args.direct:
        direct = Endpoint(base_url=args.direct, model=args.model, timeout=120,
                          api_key=os.environ.get("BENCH_DIRECT_KEY") or None)
        through = Endpoint(base_url=args.through, model=args.model, timeout=120,
                           api_key=os.environ["BENCH_GATEWAY_KEY"])
    else:
        home = Path(os.environ.get("GPU_LAB_HOME") or REPO / ".lab")
        direct, through = targets(home, args.namespace, args.name, args.gateway, args.model)
    print(f"straight: {direct.base_url}   through the gateway: {through.base_url}")
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_raise_priority)
    warm_up = argparse.Namespace(**{**vars(args), "requests": 4})
    _paired(pool, {"direct": direct, "route": through}, warm_up, "direct")
    gateway = _rounds(pool, direct, through, args, "straight vs gateway")
    control = _rounds(pool, direct, direct, args, "straight vs straight")
    pool.shutdown()
    rtt = _unloaded(direct, through, 4, args.api)
    load = (f"open, {args.rate:g} requests/s per side on interleaved schedules" if args.rate
            else f"closed loop, concurrency {args.concurrency} per side")
    print(f"\nmedians over {args.rounds} paired rounds ({args.requests} streamed "
          f"{'chats' if args.api == 'chat' else 'completions'} x {args.max_tokens} tokens per "
          f"side, {load}, both sides at once):")
    print(f"  stream output tokens/s p50, through the gateway / straight: "
          f"{gateway['stream']:.3f} (target >= 0.95: {_verdict(gateway['stream'] >= 0.95)}; "
          f"control, straight / straight: {control['stream']:.3f})")
    print(f"  TTFT p50 through the gateway - straight: {gateway['ttft']:+.1f} ms "
          f"(target <= 10 ms: {_verdict(gateway['ttft'] <= 10)}; control: "
          f"{control['ttft']:+.1f} ms)")
    print(f"  total output tokens/s, gateway / straight: {gateway['total']:.3f} (control "
          f"{control['total']:.3f}{'; open load: set by the schedule' if args.rate else ''})")
    print(f"  unloaded round trip p50 (1 token, kept-alive): straight {rtt['direct']:.1f} ms, "
          f"through the gateway {rtt['route']:.1f} ms: {rtt['route'] - rtt['direct']:+.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
