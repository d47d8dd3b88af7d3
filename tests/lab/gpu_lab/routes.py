"""The router's view of the cluster: which Route a request is for, and its backends.

Read straight from the API store on the server's loop (no copies: read only). As
OpenShift's router does:
- a request's Host (port stripped, lower case) selects the admitted Routes with that
  ``spec.host``; among them the longest ``spec.path`` that prefixes the request path,
  then the oldest Route;
- the Route's Service (``spec.to``, kind Service) selects pods in the Route's namespace;
  only Ready pods with an IP are backends;
- the port: ``spec.port.targetPort`` (a name: the Service port of that name, else a
  container port of that name; a number: that port on the pod); without it the
  Service's first port. A Service port's ``targetPort`` (number or container port name)
  gives the pod's port.
- ``haproxy.router.openshift.io/timeout`` (``us``, ``ms``, ``s``, ``m``, ``h``, ``d``; a
  bare number is milliseconds) is the server timeout: the longest wait for the backend
  to send something. Default 30 s; an unparsable value keeps the default.
"""

from __future__ import annotations

import re
from typing import Any

from .controllers.pod_network import container_port, target_port

TIMEOUT_ANNOTATION = "haproxy.router.openshift.io/timeout"
DEFAULT_TIMEOUT = 30.0
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d)?\s*$")
_ROUTES, _SERVICES, _PODS = ("route.openshift.io", "routes"), ("", "services"), ("", "pods")


def parse_timeout(value: str | None) -> float:
    match = _DURATION.match(value or "")
    if not match:
        return DEFAULT_TIMEOUT
    seconds = float(match[1]) * _UNITS[match[2] or "ms"]
    return seconds if seconds > 0 else DEFAULT_TIMEOUT


def _admitted(route: dict[str, Any]) -> bool:
    for ingress in (route.get("status") or {}).get("ingress") or []:
        for cond in ingress.get("conditions") or []:
            if cond.get("type") == "Admitted" and cond.get("status") == "True":
                return True
    return False


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return bool(status.get("podIP")) and not pod["metadata"].get("deletionTimestamp") and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or [])


class RouteTable:
    def __init__(self, store: Any) -> None:
        self.store = store

    def route_for(self, host: str, path: str) -> dict[str, Any] | None:
        host = host.lower()
        best: tuple[int, str, str] | None = None
        found = None
        for route in self.store.list(_ROUTES):
            spec = route.get("spec") or {}
            prefix = spec.get("path") or ""
            if (spec.get("host") or "").lower() != host or not path.startswith(prefix):
                continue
            if not _admitted(route):
                continue
            key = (-len(prefix), route["metadata"].get("creationTimestamp", ""),
                   route["metadata"].get("namespace", ""))
            if best is None or key < best:
                best, found = key, route
        return found

    def backends(self, route: dict[str, Any]) -> list[tuple[str, int]]:
        """(pod IP, port) of each Ready pod behind the Route."""
        spec = route.get("spec") or {}
        to = spec.get("to") or {}
        ns = route["metadata"]["namespace"]
        if to.get("kind", "Service") != "Service":
            return []
        service = self.store.get(_SERVICES, ns, to.get("name", ""))
        selector = ((service or {}).get("spec") or {}).get("selector")
        if not selector:
            return []
        wanted = (spec.get("port") or {}).get("targetPort")
        out = []
        for pod in self.store.list(_PODS, ns):
            labels = pod["metadata"].get("labels") or {}
            if _ready(pod) and all(labels.get(k) == v for k, v in selector.items()):
                port = self._port(service, pod, wanted)
                if port is not None:
                    out.append((pod["status"]["podIP"], port))
        return out

    @staticmethod
    def _port(service: dict[str, Any], pod: dict[str, Any], wanted: Any) -> int | None:
        ports = (service.get("spec") or {}).get("ports") or []
        if wanted is None:
            return target_port(ports[0], pod) if ports else None
        if isinstance(wanted, int) or str(wanted).isdigit():
            return int(wanted)
        for port in ports:
            if port.get("name") == wanted:
                return target_port(port, pod)
        return container_port(pod, str(wanted))
