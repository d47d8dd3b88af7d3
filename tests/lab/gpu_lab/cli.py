"""``gpu-lab up|status|down|reset``: the local lab (OpenShift API server + vSphere simulator).

- ``up``: start the API server daemon (state in ``$GPU_LAB_HOME``, default ``.lab/``) and,
  when ``gpu_lab.vsphere`` is present, the vSphere simulator; wait until both answer.
  Kubeconfig: ``$GPU_LAB_HOME/kubeconfig`` (contexts ``lab-admin``, ``lab-reader``).
- ``status``: what runs (API server and router URLs), versions, object counts, where
  GPUs come from. The router's URL and CA are also in ``$GPU_LAB_HOME/router.json``.
- ``down``: stop both by PID; the state stays on disk for the next ``up``.
- ``reset``: ``down`` and forget the cluster's state (objects, catalog changes, volumes).
- ``fault``: make the next N matching API requests fail (409/429/500/503/504).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from .config import LabSettings, default_home


def _pid(settings: LabSettings) -> int | None:
    path = settings.k8s_dir / "apiserver.pid"
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _tokens(settings: LabSettings) -> dict[str, str]:
    return json.loads((settings.k8s_dir / "tokens.json").read_text())


def _request(settings: LabSettings, method: str, path: str, body: Any = None) -> Any:
    url = f"https://127.0.0.1:{settings.port}{path}"
    headers = {"Authorization": f"Bearer {_tokens(settings)['admin']}"}
    response = requests.request(method, url, json=body, headers=headers, timeout=10,
                                verify=str(settings.k8s_dir / "ca.crt"))
    response.raise_for_status()
    return response.json()


# --- vSphere simulator hook (gpu_lab.vsphere, built by the ESXi issue) -----------------------
def _vsphere() -> Any:
    try:
        from gpu_lab import vsphere  # type: ignore[attr-defined]
    except ImportError:
        return None
    return vsphere


def _vsphere_up(settings: LabSettings) -> str:
    vsphere = _vsphere()
    if vsphere is None:
        return "vSphere simulator: not part of this checkout (nodes get no GPUs)"
    current = vsphere.load_state()
    if current is not None and vsphere.is_running(current):
        return f"vSphere simulator: already running at {current.url}"
    try:
        lab = vsphere.start(vsphere.Topology(hosts=settings.workers, gpus_per_host=2))
    except Exception as exc:  # a missing Go toolchain must not stop the API server
        return f"vSphere simulator: failed to start ({exc}); nodes get no GPUs"
    vsphere.save_state(lab)
    return f"vSphere simulator: {lab.url} (pid {lab.pid})"


def _vsphere_down() -> str:
    vsphere = _vsphere()
    current = vsphere.load_state() if vsphere is not None else None
    if current is None:
        return "vSphere simulator: not running"
    vsphere.stop(current)
    vsphere.clear_state()
    return f"vSphere simulator: stopped pid {current.pid}"


# --- commands ---------------------------------------------------------------------------------
def up(args: argparse.Namespace) -> int:
    settings = LabSettings.load(args.home, ocp_version=args.ocp_version, workers=args.workers,
                                time_scale=args.time_scale, port=args.port,
                                router_port=args.router_port, probe_tick=args.probe_tick)
    started = time.monotonic()
    if not args.no_vsphere:
        print(_vsphere_up(settings))
    if _pid(settings) is not None:
        print(f"API server: already running at https://127.0.0.1:{settings.port}")
        return 0
    settings.save()
    log = (settings.k8s_dir / "apiserver.log").open("ab")
    env = {**os.environ, "GPU_LAB_HOME": str(settings.home)}
    proc = subprocess.Popen([sys.executable, "-m", "gpu_lab.daemon"], stdout=subprocess.PIPE,
                            stderr=log, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("READY "):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        print(f"API server failed to start; see {settings.k8s_dir / 'apiserver.log'}",
              file=sys.stderr)
        return 1
    proc.stdout.close()
    settings = LabSettings.load(args.home)
    print(f"API server: {line[6:]} (pid {proc.pid})")
    print(f"kubeconfig: {settings.kubeconfig}  (export KUBECONFIG=...)")
    with contextlib.suppress(OSError, ValueError):
        router = json.loads(settings.router_file.read_text())
        print(f"router: {router['url']} (CA {router['ca']}; Host: <route host>)")
    print(f"ready in {time.monotonic() - started:.1f} s")
    return 0


def status(args: argparse.Namespace) -> int:
    settings = LabSettings.load(args.home)
    pid = _pid(settings)
    if pid is None:
        print("API server: not running")
        running = 1
    else:
        info = _request(settings, "GET", "/lab/status")
        print(f"API server: {info['url']} (pid {pid}), OpenShift {info['openshiftVersion']} "
              f"(Kubernetes {info['kubernetesVersion']})")
        print(f"kubeconfig: {info['kubeconfig']}")
        if info.get("router"):
            print(f"router: {info['router']} (CA {info['routerCA']}; send the route's host "
                  "in the Host header)")
        print(f"upstream CRDs: {info['crds']}")
        print(f"GPUs: {info['gpuInventory']}")
        print(f"objects: {json.dumps(info['objects'])}")
        if info["faults"]:
            print(f"pending faults: {json.dumps(info['faults'])}")
        running = 0
    vsphere = _vsphere()
    state = vsphere.load_state() if vsphere is not None else None
    if state is not None:
        alive = vsphere.is_running(state)
        print(f"vSphere simulator: {state.url} ({'running' if alive else 'not running'})")
    else:
        print("vSphere simulator: none (nodes get no GPUs)")
    return running


def down(args: argparse.Namespace) -> int:
    settings = LabSettings.load(args.home)
    pid = _pid(settings)
    if pid is None:
        print("API server: not running")
    else:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _pid(settings) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid(settings) is not None:
            os.kill(pid, signal.SIGKILL)
        print(f"API server: stopped pid {pid}")
    if not args.keep_vsphere:
        print(_vsphere_down())
    return 0


def reset(args: argparse.Namespace) -> int:
    down(args)
    settings = LabSettings.load(args.home)
    for name in ("state.json", "catalog.json", "settings.json"):
        with contextlib.suppress(FileNotFoundError):
            (settings.k8s_dir / name).unlink()
    shutil.rmtree(settings.k8s_dir / "pods", ignore_errors=True)
    shutil.rmtree(settings.home / "volumes", ignore_errors=True)
    print(f"lab state under {settings.home} cleared (certificates and tokens kept)")
    return 0


def fault(args: argparse.Namespace) -> int:
    settings = LabSettings.load(args.home)
    if args.clear:
        print(json.dumps(_request(settings, "DELETE", "/lab/faults")))
        return 0
    rule = {"verb": args.verb, "resource": args.resource, "code": args.code,
            "count": args.count, "namespace": args.namespace, "name": args.name,
            "retryAfter": args.retry_after}
    print(json.dumps(_request(settings, "POST", "/lab/faults", rule), indent=1))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu-lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=None,
                        help=f"lab state directory (default {default_home()})")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="start the lab")
    p.add_argument("--ocp-version", help="OpenShift version the cluster reports")
    p.add_argument("--workers", type=int, help="worker nodes (and vSphere hosts)")
    p.add_argument("--time-scale", type=float, help="factor on simulated delays")
    p.add_argument("--port", type=int, help="API server port (default: a free one, kept)")
    p.add_argument("--router-port", type=int,
                   help="router (HTTPS) port (default: a free one, kept)")
    p.add_argument("--probe-tick", type=float,
                   help="shortest period real probes' thresholds count, s (default 1)")
    p.add_argument("--no-vsphere", action="store_true", help="do not start the simulator")
    p.set_defaults(func=up)
    sub.add_parser("status", help="show what runs").set_defaults(func=status)
    for name, func, text in (("down", down, "stop the lab, keep its state"),
                             ("reset", reset, "stop the lab and forget its state")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--keep-vsphere", action="store_true")
        p.set_defaults(func=func)
    p = sub.add_parser("fault", help="fail the next N matching API requests")
    p.add_argument("--verb", default="*")
    p.add_argument("--resource", default="*", help="pods, deployments.apps, ... or *")
    p.add_argument("--code", type=int, default=500, choices=(409, 429, 500, 503, 504))
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--namespace")
    p.add_argument("--name")
    p.add_argument("--retry-after", type=int, default=1)
    p.add_argument("--clear", action="store_true", help="remove all pending faults")
    p.set_defaults(func=fault)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.home is not None:
        os.environ["GPU_LAB_HOME"] = str(args.home)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
