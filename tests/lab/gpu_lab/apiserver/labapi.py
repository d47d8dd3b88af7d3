"""The lab's own admin API under ``/lab/`` (admin token only).

- ``GET /lab/status``: what runs (URLs of the API server and the router, versions,
  object counts, GPU inventory, CRD source).
- ``GET|POST|DELETE /lab/faults``: list, add (``{"verb", "resource", "code", "count",
  "namespace", "name", "retryAfter", "skip"}``) or clear injected faults.
Controllers add their own routes (``/lab/olm/...``) through ``HttpApi.lab_routes``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .server import LabServer


def status(server: LabServer) -> dict[str, Any]:
    store = server.store
    counts = {f"{g}/{p}" if g else p: len(store.list((g, p))) for g, p in store.resource_keys()}
    inventory = server.gpu_inventory
    return {
        "url": server.url,
        "router": server.router_url,
        "routerCA": server.router_ca if server.router_url else None,
        "pid": os.getpid(),
        "kubeconfig": server.kubeconfig,
        "openshiftVersion": server.settings.ocp_version,
        "kubernetesVersion": server.settings.kube_version,
        "resourceVersion": store.rv,
        "objects": {k: v for k, v in sorted(counts.items()) if v},
        "crds": str(server.settings.crds) if server.crd_library.available
        else f"MISSING ({server.settings.crds}): permissive schemas",
        "gpuInventory": inventory.describe() if inventory is not None else "none",
        "controllers": server.controllers.names() if server.controllers is not None else [],
        "faults": server.faults.describe(),
    }


def register(server: LabServer) -> None:
    routes = server.http.lab_routes

    async def get_status(request: web.Request, body: Any) -> dict[str, Any]:
        return status(server)

    async def list_faults(request: web.Request, body: Any) -> dict[str, Any]:
        return {"faults": server.faults.describe()}

    async def add_fault(request: web.Request, body: Any) -> dict[str, Any]:
        rules = body if isinstance(body, list) else [body]
        added = [server.faults.add(rule or {}) for rule in rules]
        return {"added": [r.id for r in added], "faults": server.faults.describe()}

    async def clear_faults(request: web.Request, body: Any) -> dict[str, Any]:
        server.faults.clear()
        return {"faults": []}

    routes[("GET", "/lab/status")] = get_status
    routes[("GET", "/lab/faults")] = list_faults
    routes[("POST", "/lab/faults")] = add_fault
    routes[("DELETE", "/lab/faults")] = clear_faults
