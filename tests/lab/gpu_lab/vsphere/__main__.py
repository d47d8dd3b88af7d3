"""``python -m gpu_lab.vsphere up|down|status``: the lab's vSphere on its own."""

from __future__ import annotations

import argparse
import json
import sys

from gpu_lab.vsphere.process import Topology, is_running, start, stop
from gpu_lab.vsphere.state import clear_state, load_state, save_state


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gpu_lab.vsphere")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the simulator and write vsphere.json")
    defaults = Topology()
    up.add_argument("--hosts", type=int, default=defaults.hosts)
    up.add_argument("--gpus-per-host", type=int, default=defaults.gpus_per_host)
    up.add_argument("--gpu-model", default=defaults.gpu_model)
    up.add_argument("--vms", type=int, default=None)
    up.add_argument("--delay-ms", type=int, default=0)
    up.add_argument("--no-apply-now", action="store_true",
                    help="hosts need a reboot to activate passthrough changes")
    up.add_argument("--no-tls", action="store_true")
    sub.add_parser("down", help="stop the simulator recorded in vsphere.json")
    sub.add_parser("status", help="print the recorded simulator and whether it runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    current = load_state()
    if args.command == "up":
        if current is not None and is_running(current):
            print(f"already running: {current.url} (pid {current.pid})")
            return 0
        topology = Topology(hosts=args.hosts, gpus_per_host=args.gpus_per_host,
                            gpu_model=args.gpu_model, vms=args.vms, delay_ms=args.delay_ms,
                            apply_now=not args.no_apply_now)
        lab = start(topology, tls=not args.no_tls)
        path = save_state(lab)
        print(f"vSphere lab up: {lab.url} (pid {lab.pid}); connection in {path}")
        return 0
    if args.command == "down":
        if current is not None:
            stop(current)
            clear_state()
            print(f"stopped pid {current.pid}")
        else:
            print("not running")
        return 0
    if current is None:
        print(json.dumps({"running": False}))
        return 1
    summary = {k: v for k, v in current.to_json().items() if k != "password"}
    summary["running"] = is_running(current)
    print(json.dumps(summary, indent=2))
    return 0 if summary["running"] else 1


if __name__ == "__main__":
    sys.exit(main())
