"""Real container probes for process pods, as the kubelet runs them.

One asyncio task per container (never blocking the server's loop): the ``startupProbe``
first; once it passed, the ``readinessProbe`` and ``livenessProbe`` side by side.
``httpGet`` (path, port number or named container port, scheme HTTP/HTTPS without
certificate checks, httpHeaders; 200-399 pass) and ``tcpSocket`` are checked against
the pod IP (or ``host``); ``exec`` and ``grpc`` probes are not modelled (they pass).

Timing follows the probe fields, scaled by ``GPU_LAB_TIME_SCALE`` like the lab's other
delays: ``initialDelaySeconds`` (from container start); ``periodSeconds`` sets how often
a probe runs (but at least once per second and at most 20 times per second);
``timeoutSeconds`` (at least 0.5 s). The processes are real and answer in real time,
so the thresholds count periods of at least one second: a probe "failed
failureThreshold times" once it has kept failing for (failureThreshold - 1) x
max(periodSeconds x scale, 1 s), likewise for successThreshold (1 s: the lab's
``probe_tick``, ``GPU_LAB_PROBE_TICK``). A startup window of
``periodSeconds: 10`` x ``failureThreshold: 180`` is thus 179 s at time scale 0.02 and
1790 s at 1.0. Readiness starts false (no readiness probe: ready once started). A
startup or liveness probe that reaches its failureThreshold kills the container
(``on_kill``); the kubelet's CrashLoopBackOff path restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .pod_network import container_port

MIN_PERIOD, MAX_PERIOD, MIN_TIMEOUT, MIN_TICK = 0.05, 1.0, 0.5, 1.0
_LABELS = {"startupProbe": "Startup", "readinessProbe": "Readiness",
           "livenessProbe": "Liveness"}


@dataclass
class ProbeState:
    started: bool = False  # the startup probe passed (or there is none)
    ready: bool = False


@dataclass
class Timing:
    delay: float
    period: float  # how often the probe runs
    timeout: float
    failures: int
    successes: int
    tick: float = MIN_TICK  # what one period counts as for the thresholds

    def reached(self, threshold: int, held: float) -> bool:
        """Has a result held long enough to count ``threshold`` times in a row?"""
        return held >= (threshold - 1) * self.tick - 1e-9

    @classmethod
    def of(cls, probe: dict[str, Any], scale: float, min_tick: float = MIN_TICK) -> Timing:
        def num(key: str, default: float) -> float:
            value = probe.get(key)
            return float(value) if isinstance(value, int | float) and value >= 0 else default

        period = num("periodSeconds", 10) * scale
        return cls(delay=num("initialDelaySeconds", 0) * scale,
                   period=min(max(period, MIN_PERIOD), MAX_PERIOD), tick=max(period, min_tick),
                   timeout=max(num("timeoutSeconds", 1) * scale, MIN_TIMEOUT),
                   failures=max(int(num("failureThreshold", 3)), 1),
                   successes=max(int(num("successThreshold", 1)), 1))


def _insecure_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _port(value: Any, container: dict[str, Any]) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return container_port({"spec": {"containers": [container]}}, str(value))


async def _http_get(spec: dict[str, Any], container: dict[str, Any], ip: str,
                    timeout: float) -> tuple[bool, str]:
    host = spec.get("host") or ip
    port = _port(spec.get("port"), container)
    scheme = str(spec.get("scheme") or "HTTP").upper()
    path = spec.get("path") or "/"
    url = f"{scheme.lower()}://{host}:{port}{path}"
    if port is None:
        return False, f'Get "{url}": port {spec.get("port")!r} is not a container port'
    headers = {"Host": f"{host}:{port}", "User-Agent": "kube-probe/1", "Accept": "*/*"}
    headers |= {h["name"]: h["value"] for h in spec.get("httpHeaders") or []
                if h.get("name")}
    headers["Connection"] = "close"
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\n{lines}\r\n"
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=_insecure_tls() if scheme == "HTTPS" else None)
            writer.write(request.encode())
            await writer.drain()
            line = await reader.readline()
    except TimeoutError:
        return False, (f'Get "{url}": context deadline exceeded (Client.Timeout exceeded '
                       "while awaiting headers)")
    except OSError as exc:
        return False, f'Get "{url}": dial tcp {host}:{port}: {_reason(exc)}'
    finally:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
    parts = line.decode("latin-1").split()
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if 200 <= code < 400:
        return True, ""
    return False, (f"HTTP probe failed with statuscode: {code}" if code
                   else f'Get "{url}": malformed HTTP response {line[:60]!r}')


async def _tcp(spec: dict[str, Any], container: dict[str, Any], ip: str,
               timeout: float) -> tuple[bool, str]:
    host = spec.get("host") or ip
    port = _port(spec.get("port"), container)
    if port is None:
        return False, f"dial tcp {host}: port {spec.get('port')!r} is not a container port"
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return False, f"dial tcp {host}:{port}: i/o timeout"
    except OSError as exc:
        return False, f"dial tcp {host}:{port}: {_reason(exc)}"
    with contextlib.suppress(Exception):
        writer.close()
    return True, ""


def _reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connect: connection refused"
    return f"connect: {exc.strerror or exc}"


async def check(probe: dict[str, Any], container: dict[str, Any], ip: str,
                timeout: float) -> tuple[bool, str]:
    """Run one probe once: (passed, failure message)."""
    if isinstance(probe.get("httpGet"), dict):
        return await _http_get(probe["httpGet"], container, ip, timeout)
    if isinstance(probe.get("tcpSocket"), dict):
        return await _tcp(probe["tcpSocket"], container, ip, timeout)
    return True, ""  # exec / grpc: not modelled


class _Streak:
    """How long the same probe result has held (since its first check)."""

    def __init__(self) -> None:
        self.ok: bool | None = None
        self.since = 0.0

    def add(self, ok: bool) -> float:
        now = asyncio.get_running_loop().time()
        if ok != self.ok:
            self.ok, self.since = ok, now
        return now - self.since


class PodProber:
    """Runs the probes of one pod's containers until ``stop()``.

    Callbacks (all called on the loop): ``alive(container)`` whether its process runs;
    ``on_change()`` after a state change; ``on_event(reason, message)`` for the pod's
    events; ``on_kill(container, message)`` when a startup/liveness probe gave up.
    """

    def __init__(self, containers: list[dict[str, Any]], ip: str, scale: float, tick: float,
                 alive: Callable[[str], bool], on_change: Callable[[], None],
                 on_event: Callable[[str, str], None],
                 on_kill: Callable[[str, str], None]) -> None:
        self.ip = ip
        self.scale, self.tick = scale, tick
        self.alive, self.on_change, self.on_event, self.on_kill = (
            alive, on_change, on_event, on_kill)
        self.states = {c["name"]: ProbeState() for c in containers}
        self._tasks = [asyncio.get_running_loop().create_task(
            self._container(c), name=f"probe-{c['name']}") for c in containers]

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    def _set(self, state: ProbeState, **values: bool) -> None:
        if any(getattr(state, k) != v for k, v in values.items()):
            for key, value in values.items():
                setattr(state, key, value)
            self.on_change()

    async def _container(self, container: dict[str, Any]) -> None:
        state = self.states[container["name"]]
        started = asyncio.get_running_loop().time()
        startup = container.get("startupProbe")
        if isinstance(startup, dict) and not await self._until_passed(
                container, "startupProbe", startup, started):
            return
        self._set(state, started=True)
        jobs = []
        readiness = container.get("readinessProbe")
        if isinstance(readiness, dict):
            jobs.append(self._readiness(container, readiness, state, started))
        else:
            self._set(state, ready=True)
        liveness = container.get("livenessProbe")
        if isinstance(liveness, dict):
            jobs.append(self._until_passed(container, "livenessProbe", liveness, started,
                                           forever=True))
        await asyncio.gather(*jobs)

    async def _wait_delay(self, timing: Timing, started: float) -> None:
        remaining = started + timing.delay - asyncio.get_running_loop().time()
        if remaining > 0:
            await asyncio.sleep(remaining)

    async def _until_passed(self, container: dict[str, Any], kind: str,
                            probe: dict[str, Any], started: float,
                            forever: bool = False) -> bool:
        """Startup: until it passes (True) or gives up (False, container killed).
        Liveness (``forever``): until it gives up."""
        timing = Timing.of(probe, self.scale, self.tick)
        await self._wait_delay(timing, started)
        streak = _Streak()
        name = container["name"]
        while self.alive(name):
            ok, message = await check(probe, container, self.ip, timing.timeout)
            if ok and not forever:
                return True
            held = streak.add(ok)
            if not ok:
                self.on_event("Unhealthy", f"{_LABELS[kind]} probe failed: {message}")
            if not ok and timing.reached(timing.failures, held):
                what = "startup" if kind == "startupProbe" else "liveness"
                self.on_kill(name, f"Container {name} failed {what} probe, will be restarted")
                return False
            await asyncio.sleep(timing.period)
        return False

    async def _readiness(self, container: dict[str, Any], probe: dict[str, Any],
                         state: ProbeState, started: float) -> None:
        timing = Timing.of(probe, self.scale, self.tick)
        await self._wait_delay(timing, started)
        streak = _Streak()
        name = container["name"]
        while self.alive(name):
            ok, message = await check(probe, container, self.ip, timing.timeout)
            held = streak.add(ok)
            if ok and timing.reached(timing.successes, held):
                self._set(state, ready=True)
            if not ok:
                self.on_event("Unhealthy", f"Readiness probe failed: {message}")
                if timing.reached(timing.failures, held):
                    self._set(state, ready=False)
            await asyncio.sleep(timing.period)
        self._set(state, ready=False)
