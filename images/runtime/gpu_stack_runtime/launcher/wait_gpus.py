"""``python -m gpu_stack_runtime.launcher.wait_gpus``: block until Ray holds N GPUs.

The launcher runs this as a child so that Ray's client (threads, gRPC, signal
handlers) never lives in the launcher process itself. Progress goes to stdout every
interval ("N of M GPUs joined (nodes: ...)"); on timeout the same line goes to stderr
with the missing count and the exit code is EXIT_GPUS.
"""

from __future__ import annotations

import argparse
import sys

from gpu_stack_runtime.launcher.errors import LaunchError
from gpu_stack_runtime.launcher.ray_cluster import RayProbe, wait_for_gpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpu_stack_runtime.launcher.wait_gpus")
    parser.add_argument("--address", required=True, help="Ray GCS address HOST:PORT")
    parser.add_argument("--gpus", type=int, required=True, help="GPUs the layout needs")
    parser.add_argument("--timeout", type=float, required=True, help="seconds")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between logs")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(f"gpu-stack-launch: {line}", flush=True)

    try:
        probe = RayProbe(args.address)
        try:
            wait_for_gpus(probe, args.gpus, timeout=args.timeout, interval=args.interval,
                          log=log)
        finally:
            probe.close()
    except LaunchError as exc:
        print(f"gpu-stack-launch: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
