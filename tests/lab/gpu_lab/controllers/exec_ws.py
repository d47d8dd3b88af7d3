"""``pods/exec`` for process pods, over the Kubernetes channel websocket protocol.

The protocol the ``kubernetes`` client's ``stream()`` speaks (v4/v5.channel.k8s.io):
binary frames whose first byte is the channel - 0 stdin, 1 stdout, 2 stderr, 3 the
final Status (JSON), 255 (v5) "close this channel". The command runs as a local process
with the container's mount paths mapped like the process runtime maps them; ``tar`` run
with ``-C /`` (what kubernetes.core's copy module sends) also gets ``--transform`` rules
so members under a mount path land in its local directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from .process_runtime import lab_path, map_path

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io")


def exec_argv(command: list[str], mounts: dict[str, Path]) -> list[str]:
    argv = [map_path(a, mounts) for a in command]
    if argv and Path(argv[0]).name == "tar" and "-C" in argv:
        at = argv.index("-C")
        if at + 1 < len(argv) and argv[at + 1] == "/":
            for mount in sorted(mounts, key=len, reverse=True):
                inner = mount.strip("/")
                local = str(mounts[mount]).lstrip("/")
                argv[1:1] = [f"--transform=s,^{inner}\\(/\\|$\\),{local}\\1,"]
    return argv


def _status(code: int) -> bytes:
    if code == 0:
        body = {"metadata": {}, "status": "Success"}
    else:
        body = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                "message": f"command terminated with non-zero exit code: exit status {code}",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
    return b"\x03" + json.dumps(body).encode()


async def serve_exec(request: web.Request, pod: dict[str, Any],
                     mounts_by_container: dict[str, dict[str, Path]],
                     environment: Any = None) -> web.StreamResponse:
    """``environment(container name) -> env``: the container's own environment, as a
    real exec gets it (default: only PATH and HOME)."""
    query = request.query
    container = query.get("container") or next(iter(mounts_by_container), "")
    mounts = mounts_by_container.get(container, {})
    command = exec_argv(query.getall("command", []), mounts)
    ws = web.WebSocketResponse(protocols=PROTOCOLS)
    await ws.prepare(request)
    want_stdin = query.get("stdin") in ("true", "1")
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE if want_stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=(environment(container) if environment else None)
            or {"PATH": lab_path(), "HOME": str(Path.home())})
    except OSError as exc:
        await ws.send_bytes(b"\x02" + f"exec: {exc}\n".encode())
        await ws.send_bytes(_status(127))
        await ws.close()
        return ws

    async def pump(stream: asyncio.StreamReader, channel: int) -> None:
        while chunk := await stream.read(65536):
            with contextlib.suppress(ConnectionResetError):
                await ws.send_bytes(bytes([channel]) + chunk)

    async def feed() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel == 0 and proc.stdin is not None:
                proc.stdin.write(data)
                await proc.stdin.drain()
            elif channel == 255 and proc.stdin is not None:
                proc.stdin.close()
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()  # the client went away: end of input

    feeder = asyncio.create_task(feed())
    await asyncio.gather(pump(proc.stdout, 1), pump(proc.stderr, 2))
    code = await proc.wait()
    if not ws.closed:
        await ws.send_bytes(_status(code))
        await ws.close()
    feeder.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await feeder
    return ws
