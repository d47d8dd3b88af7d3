"""Routes (the default router admits each and publishes its host) and Service endpoints."""

from __future__ import annotations

from typing import Any

from .base import Controller, condition


class RouteController(Controller):
    name = "openshift-router"
    watches = (("route.openshift.io", "routes"),)

    def reconcile(self) -> float | None:
        canonical = f"router-default.{self.settings.apps_domain}"
        for route in self.list("route.openshift.io", "routes"):
            host = route["spec"].get("host")
            ingress = ((route.get("status") or {}).get("ingress") or [{}])[0]
            previous = ingress.get("conditions") or []
            self.set_status("route.openshift.io", "routes", route, {"ingress": [{
                "host": host, "routerName": "default", "wildcardPolicy": "None",
                "routerCanonicalHostname": canonical,
                "conditions": [condition("Admitted", True, previous=previous)]}]})
        return None


class EndpointsController(Controller):
    """Endpoints of each Service with a selector: the ready (and not ready) pod addresses."""

    name = "endpoints-controller"
    watches = (("", "services"), ("", "pods"))

    def reconcile(self) -> float | None:
        pods = self.list("", "pods")
        for svc in self.list("", "services"):
            selector = (svc.get("spec") or {}).get("selector")
            if not selector:
                continue
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            ready, not_ready = [], []
            for pod in pods:
                labels = pod["metadata"].get("labels") or {}
                ip = (pod.get("status") or {}).get("podIP")
                if pod["metadata"]["namespace"] != ns or not ip or any(
                        labels.get(k) != v for k, v in selector.items()):
                    continue
                address = {"ip": ip, "nodeName": pod["spec"].get("nodeName"), "targetRef": {
                    "kind": "Pod", "namespace": ns, "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"]}}
                is_ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                               for c in (pod.get("status") or {}).get("conditions") or [])
                (ready if is_ready else not_ready).append(address)
            ports = [{k: p[k] for k in ("name", "protocol") if k in p} | {
                "port": p["targetPort"] if isinstance(p.get("targetPort"), int) else p["port"]}
                for p in svc["spec"].get("ports") or []]
            subset: dict[str, Any] = {"ports": ports}
            if ready:
                subset["addresses"] = ready
            if not_ready:
                subset["notReadyAddresses"] = not_ready
            body = {"metadata": {"name": name, "namespace": ns,
                                 "labels": svc["metadata"].get("labels") or {}},
                    "subsets": [subset] if ready or not_ready else []}
            current = self.get("", "endpoints", ns, name)
            if current is None:
                self.create("", "endpoints", body)
            elif current.get("subsets") != body["subsets"]:
                self.patch("", "endpoints", ns, name, {"subsets": body["subsets"]})
        return None
