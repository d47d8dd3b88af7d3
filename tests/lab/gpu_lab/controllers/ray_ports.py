"""Machine-unique Ray ports for RayClusters whose pods run as local processes.

On a cluster every Ray head has its own network namespace, so all of them use the GCS
port 6379 and the Ray client port 10001. In the lab they share the machine, and Ray's
GCS listens on every address (its client server also on 127.0.0.1): a second head on
6379 would find the first one's GCS. So the lab's KubeRay gives each such RayCluster
its own free GCS and client ports (kept as annotations of its head Service, so they
survive a lab restart), unless ``rayStartParams`` sets ``port`` /
``ray-client-server-port`` itself:

- the head Service keeps KubeRay's port numbers, with the GCS port's ``targetPort`` set
  to the cluster's GCS port, so a worker's ``--address=<head svc>:6379`` reaches it
  through the lab's Service-name rewrite (pod_network.py) unchanged;
- the head's generated ``ray start`` gets ``--port`` and ``--ray-client-server-port``,
  and its ``RAY_PORT`` / ``RAY_ADDRESS`` name the GCS port it really listens on.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Any

from .process_runtime import wants_process

GCS_PORT = "gpu-lab.llmops.io/gcs-port"
CLIENT_PORT = "gpu-lab.llmops.io/ray-client-port"
_PARAMS = {GCS_PORT: "port", CLIENT_PORT: "ray-client-server-port"}
_RAY_WORKER_PORTS = range(10002, 20000)  # ray start's default --min/--max-worker-port


def _ephemeral_low() -> int:
    """The kernel's lowest port for outgoing connections (32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(taken: set[int]) -> int:
    """A free port of the machine outside ``taken``, Ray's worker port range and the
    kernel's ephemeral range: the port is chosen now and bound later, when the head
    starts, and in between any outgoing connection of the machine could be given an
    ephemeral port (a GCS port lost that way left a head without its GCS)."""
    candidates = range(_RAY_WORKER_PORTS.stop, _ephemeral_low())
    for port in random.sample(candidates, min(len(candidates), 200)):
        if port not in taken and _bindable(port):
            return port
    while True:  # no room below the ephemeral range on this machine
        with socket.socket() as sock:
            sock.bind(("", 0))
            port = sock.getsockname()[1]
        if port not in taken and port not in _RAY_WORKER_PORTS:
            return port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def choose(rc: dict[str, Any], services: list[dict[str, Any]]) -> dict[str, str]:
    """Annotations for a new head Service: the ports this cluster's head will use
    (none for simulated clusters or ports the cluster sets itself)."""
    head = rc["spec"]["headGroupSpec"]
    if not wants_process({"spec": (head.get("template") or {}).get("spec") or {}}):
        return {}
    params = head.get("rayStartParams") or {}
    taken = {int(v) for s in services for k, v in
             ((s["metadata"].get("annotations") or {}).items()) if k in _PARAMS}
    chosen: dict[str, str] = {}
    for annotation, param in _PARAMS.items():
        if param not in params:
            port = free_port(taken)
            taken.add(port)
            chosen[annotation] = str(port)
    return chosen


def recorded(service: dict[str, Any] | None) -> dict[str, int]:
    """rayStartParams name -> port, from the head Service's annotations."""
    annotations = ((service or {}).get("metadata") or {}).get("annotations") or {}
    return {param: int(annotations[a]) for a, param in _PARAMS.items() if a in annotations}


def map_gcs(ports: list[dict[str, Any]], gcs_service_port: int,
            chosen: dict[str, str]) -> list[dict[str, Any]]:
    """The head Service's ports, the GCS one pointing at the cluster's GCS port."""
    if GCS_PORT not in chosen:
        return ports
    return [p | {"targetPort": int(chosen[GCS_PORT])} if p["port"] == gcs_service_port else p
            for p in ports]
