"""Routes: the default router admits every Route and publishes its host in status."""

from __future__ import annotations

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
