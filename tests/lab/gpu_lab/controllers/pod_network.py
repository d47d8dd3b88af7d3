"""Pod networking for process pods: loopback pod IPs and the names a pod uses.

The lab has no network namespaces, no DNS and no kube-proxy. It plays them like this:

- every process pod gets its own loopback address ``127.0.0.N`` (N >= 2) as its pod IP
  (``LoopbackPool``), assigned before its containers start so the downward API
  (``status.podIP``) sees it. Linux routes all of 127.0.0.0/8 to ``lo``, so servers can
  bind it and every other pod (and the router) can reach it;
- the pod's network namespace holds only that address: ``0.0.0.0`` in an argument or
  an environment value (alone, ``0.0.0.0:port``, ``--opt=0.0.0.0``, or inside a longer
  string) becomes the pod IP, and an environment value ``eth0`` (the pod's interface,
  e.g. ``NCCL_SOCKET_IFNAME``) becomes ``lo``;
- a Service DNS name ``<svc>.<ns>.svc`` or ``<svc>.<ns>.svc.cluster.local`` (with or
  without ``:port``, also inside a longer string) stands for its ClusterIP: it is
  replaced by the pod IP of a running pod the Service selects (ready ones first), and
  ``:port`` by that Service port's targetPort. A pod naming a Service that has no such
  pod yet waits in ContainerCreating (``unresolved``). A Service selecting the pod
  itself resolves to the pod's own IP. The choice is made once, at container start.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ANY_ADDRESS = re.compile(r"(?<![\w.])0\.0\.0\.0(?![\w.])")
_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
SERVICE_NAME = re.compile(
    rf"(?<![\w.-])(?P<svc>{_LABEL})\.(?P<ns>{_LABEL})\.svc(?:\.cluster\.local)?"
    r"(?![-\w]|\.[a-z0-9])(?::(?P<port>\d{1,5})(?!\d))?")
POD_INTERFACE = "eth0"
LOOPBACK_INTERFACE = "lo"
_FIRST = int(ipaddress.IPv4Address("127.0.0.2"))
_LAST = int(ipaddress.IPv4Address("127.255.255.254"))


def _listening_addresses(proc_net: Path = Path("/proc/net")) -> set[str]:
    """IPv4 addresses (also IPv4-mapped IPv6 ones) with a listening TCP socket on this
    machine (other labs, other people's Ray nodes): a new pod IP avoids them. Empty
    where /proc is not Linux's."""
    found: set[str] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) <= 3 or fields[3] != "0A":  # TCP_LISTEN
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            if len(words) == 4:
                found.add(str(ipaddress.IPv4Address(words)))
            elif (mapped := ipaddress.IPv6Address(words).ipv4_mapped) is not None:
                found.add(str(mapped))
    return found


class LoopbackPool:
    """Unique loopback pod IPs for live process pods (by pod uid)."""

    def __init__(self, busy: Callable[[], set[str]] = _listening_addresses) -> None:
        self._by_uid: dict[str, str] = {}
        self._busy = busy

    def get(self, uid: str) -> str | None:
        return self._by_uid.get(uid)

    def reserve(self, uid: str, ip: str) -> bool:
        """Keep a restored pod's address; False when it is not ours to keep."""
        if ip in self._by_uid.values() and self._by_uid.get(uid) != ip:
            return False
        self._by_uid[uid] = ip
        return True

    def allocate(self, uid: str) -> str:
        if uid in self._by_uid:
            return self._by_uid[uid]
        taken = set(self._by_uid.values()) | self._busy()
        for value in range(_FIRST, _LAST + 1):
            if value & 0xFF in (0, 255):
                continue
            ip = str(ipaddress.IPv4Address(value))
            if ip not in taken:
                self._by_uid[uid] = ip
                return ip
        raise RuntimeError("no free loopback address for a pod")

    def release(self, uid: str) -> None:
        self._by_uid.pop(uid, None)

    def in_use(self) -> dict[str, str]:
        return dict(self._by_uid)


@dataclass
class Target:
    """What a Service name stands for in one pod: an endpoint pod's IP and the port map
    (service port -> the pod's port)."""

    ip: str
    ports: dict[int, int] = field(default_factory=dict)


def service_refs(texts: Iterable[str]) -> list[tuple[str, str, str]]:
    """(service, namespace, name as written) for each Service DNS name in ``texts``."""
    seen: dict[tuple[str, str], str] = {}
    for text in texts:
        for match in SERVICE_NAME.finditer(text):
            seen.setdefault((match["svc"], match["ns"]), match.group(0).split(":")[0])
    return [(svc, ns, name) for (svc, ns), name in seen.items()]


def rewrite(value: str, pod_ip: str, targets: dict[tuple[str, str], Target]) -> str:
    """``value`` as the pod's processes must see it (see the module docstring)."""
    value = _ANY_ADDRESS.sub(pod_ip, value)

    def _service(match: re.Match[str]) -> str:
        target = targets.get((match["svc"], match["ns"]))
        if target is None:
            return match.group(0)
        if match["port"] is None:
            return target.ip
        port = int(match["port"])
        return f"{target.ip}:{target.ports.get(port, port)}"

    return SERVICE_NAME.sub(_service, value)


def rewrite_env(value: str, pod_ip: str, targets: dict[tuple[str, str], Target]) -> str:
    return LOOPBACK_INTERFACE if value == POD_INTERFACE else rewrite(value, pod_ip, targets)


def _selects(service: dict[str, Any], pod: dict[str, Any]) -> bool:
    selector = (service.get("spec") or {}).get("selector") or {}
    labels = pod["metadata"].get("labels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _running(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return (status.get("phase") == "Running" and bool(status.get("podIP"))
            and not pod["metadata"].get("deletionTimestamp"))


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def container_port(pod: dict[str, Any], name: str) -> int | None:
    """The number of the pod's container port called ``name``."""
    for container in pod["spec"].get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == name:
                return int(port["containerPort"])
    return None


def target_port(service_port: dict[str, Any], pod: dict[str, Any]) -> int | None:
    """A Service port's targetPort on ``pod`` (a name resolves through its containers)."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, str) and not target.isdigit():
        return container_port(pod, target)
    return int(target) if target is not None else None


class ServiceResolver:
    """Service DNS names -> endpoint pods, from the API store (through the kubelet)."""

    def __init__(self, get: Callable[..., dict | None], list_: Callable[..., list[dict]]):
        self.get = get
        self.list = list_

    def endpoint(self, service: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any] | None:
        """A running pod the Service selects: the pod itself, else a ready one, else any."""
        if _selects(service, pod):
            return pod
        ns = service["metadata"]["namespace"]
        running = [p for p in self.list("", "pods", ns) if _selects(service, p) and _running(p)]
        ready = [p for p in running if _ready(p)]
        return (ready or running or [None])[0]

    def resolve(self, pod: dict[str, Any], texts: Iterable[str]
                ) -> tuple[dict[tuple[str, str], Target], list[str]]:
        """Targets for the names in ``texts`` and the names that do not resolve yet (with
        why). A self-reference resolves to the pod's status.podIP (set before start)."""
        targets: dict[tuple[str, str], Target] = {}
        missing: list[str] = []
        for svc, ns, name in service_refs(texts):
            service = self.get("", "services", ns, svc)
            if service is None:
                missing.append(f'"{name}" (no Service {ns}/{svc})')
                continue
            endpoint = self.endpoint(service, pod)
            ip = ((endpoint or {}).get("status") or {}).get("podIP")
            if endpoint is None:
                missing.append(f'"{name}" (no running pod selected by Service {ns}/{svc})')
                continue
            ports = {int(p["port"]): target_port(p, endpoint) or int(p["port"])
                     for p in (service.get("spec") or {}).get("ports") or []}
            targets[(svc, ns)] = Target(ip or "", ports)
        return targets, missing
