"""``python -m gpu_lab.daemon``: run the lab's API server and controllers in the foreground.

``gpu-lab up`` starts this in the background; it writes its PID to
``$GPU_LAB_HOME/k8s/apiserver.pid`` and stops cleanly (state saved) on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from .apiserver.server import LabServer
from .config import LabSettings


def pid_file(settings: LabSettings) -> os.PathLike[str]:
    return settings.k8s_dir / "apiserver.pid"


async def _main(settings: LabSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = LabServer(settings)
    await server.start()
    path = settings.k8s_dir / "apiserver.pid"
    path.write_text(str(os.getpid()))
    print(f"READY {server.url}", flush=True)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the reader of READY has gone
    try:
        await stop.wait()
    finally:
        await server.shutdown()
        path.unlink(missing_ok=True)


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = LabSettings.load()
    asyncio.run(_main(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
