"""OLM: Subscription -> InstallPlan -> ClusterServiceVersion -> operator Deployments.

- A Subscription resolves its package/channel in the lab catalog (olm_catalog.py) and
  gets an InstallPlan for ``startingCSV`` or the channel head. Only the exact value
  ``Manual`` of ``installPlanApproval`` waits for ``spec.approved: true`` (as in OLM; the
  CRD accepts any string). Upgrades follow the ``replaces`` chain one CSV at a time.
- An approved InstallPlan registers the operator's CRDs (upstream files) and creates the
  CSV, with ``alm-examples``; the CSV goes Pending -> InstallReady -> Installing ->
  Succeeded once its operator Deployments are available, or Failed: no OperatorGroup in
  the namespace (``NoOperatorGroup``), or a failure set through ``/lab/olm/fail``.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from aiohttp import web

from ..apiserver import clock
from ..apiserver.crds import permissive_crd
from ..apiserver.resources import ResourceType
from . import olm_examples
from .base import Controller, condition, owned_by, owner_ref
from .olm_catalog import MARKETPLACE, Catalog, CsvVersion, PackageManifests

G = "operators.coreos.com"
_STEP_SECONDS = 0.3


class OlmController(Controller):
    name = "olm-operator"
    watches = ((G, "subscriptions"), (G, "installplans"), (G, "clusterserviceversions"),
               (G, "operatorgroups"), ("apps", "deployments"),
               ("apiextensions.k8s.io", "customresourcedefinitions"))

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self.catalog = Catalog(self.settings.k8s_dir / "catalog.json")
        self._since: dict[str, float] = {}
        server.registry.add(ResourceType(
            group="packages.operators.coreos.com", version="v1", kind="PackageManifest",
            plural="packagemanifests", namespaced=True, subresources=(),
            verbs=("get", "list"), builtin=False, virtual=PackageManifests(self.catalog)))
        routes = server.http.lab_routes
        routes[("GET", "/lab/olm/catalog")] = self._get_catalog
        routes[("POST", "/lab/olm/publish")] = self._publish
        routes[("POST", "/lab/olm/fail")] = self._fail

    # --- lab admin API ---------------------------------------------------------------------
    async def _get_catalog(self, request: web.Request, body: Any) -> dict[str, Any]:
        return self.catalog.describe()

    async def _publish(self, request: web.Request, body: Any) -> dict[str, Any]:
        body = body or {}
        csv = self.catalog.publish(str(body.get("package")), str(body.get("channel")),
                                   str(body.get("version")))
        self.server.controllers.poke(self.name)
        return {"published": csv.name, "replaces": csv.replaces}

    async def _fail(self, request: web.Request, body: Any) -> dict[str, Any]:
        body = body or {}
        self.catalog.fail(str(body.get("csv")), str(body.get("message") or
                                                    "install failed (gpu-lab fault)"))
        self.server.controllers.poke(self.name)
        return {"failing": sorted(self.catalog.failures)}

    # --- reconcile -----------------------------------------------------------------------
    def reconcile(self) -> float | None:
        waits: list[float] = []
        for sub in self.list(G, "subscriptions"):
            if not sub["metadata"].get("deletionTimestamp"):
                self._subscription(sub)
        for plan in self.list(G, "installplans"):
            wait = self._install_plan(plan)
            if wait is not None:
                waits.append(wait)
        for csv in self.list(G, "clusterserviceversions"):
            wait = self._csv(csv)
            if wait is not None:
                waits.append(wait)
        return min(waits) if waits else None

    def _dwell(self, obj: dict[str, Any], phase: str) -> float:
        """Seconds left before ``obj`` may leave ``phase`` (each step takes a moment)."""
        key = f"{obj['metadata']['uid']}:{phase}"
        now = time.monotonic()
        self._since.setdefault(key, now)
        return max(self.scaled(_STEP_SECONDS) - (now - self._since[key]), 0.0)

    # --- subscriptions ---------------------------------------------------------------------
    def _subscription(self, sub: dict[str, Any]) -> None:
        spec, ns = sub["spec"], sub["metadata"]["namespace"]
        status = copy.deepcopy(sub.get("status") or {})
        previous = status.get("conditions") or []
        pkg = self.catalog.packages.get(spec.get("name", ""))
        channel = spec.get("channel") or (pkg.default_channel if pkg else "")
        problem = ""
        if pkg is None or pkg.source != spec.get("source") or spec.get(
                "sourceNamespace") != MARKETPLACE:
            problem = (f"constraints not satisfiable: no operators found in package "
                       f"{spec.get('name')} in the catalog referenced by subscription "
                       f"{sub['metadata']['name']}")
        elif pkg.head(channel) is None:
            problem = (f"constraints not satisfiable: no operators found in channel {channel} "
                       f"of package {pkg.name} in the catalog referenced by subscription "
                       f"{sub['metadata']['name']}")
        elif spec.get("startingCSV") and not any(
                e.name == spec["startingCSV"] for e in pkg.channels[channel]):
            problem = (f"constraints not satisfiable: no operators found with name "
                       f"{spec['startingCSV']} in channel {channel} of package {pkg.name}")
        health = [{"catalogSourceRef": {"apiVersion": f"{G}/v1alpha1", "kind": "CatalogSource",
                                        "name": spec.get("source", ""),
                                        "namespace": spec.get("sourceNamespace", "")},
                   "healthy": True, "lastUpdated": (status.get("catalogHealth") or [{}])[0].get(
                       "lastUpdated") or clock.now()}]
        conditions = [condition("CatalogSourcesUnhealthy", False, "AllCatalogSourcesHealthy",
                                "all available catalogsources are healthy", previous)]
        status["catalogHealth"] = health
        if problem:
            conditions.append(condition("ResolutionFailed", True, "ConstraintsNotSatisfiable",
                                        problem, previous))
            self._write_sub(sub, status, conditions)
            return
        assert pkg is not None
        current = status.get("currentCSV")
        current_csv = self.get(G, "clusterserviceversions", ns, current) if current else None
        succeeded = (current_csv or {}).get("status", {}).get("phase") == "Succeeded"
        if succeeded:
            status["installedCSV"] = current
        target = self._target(pkg, channel, spec, status.get("installedCSV"), succeeded or
                              not current)
        if target and target.name != current:
            plan = self._create_plan(sub, target)
            if plan is None:
                return
            plan_ref = {"apiVersion": f"{G}/v1alpha1", "kind": "InstallPlan",
                        "name": plan["metadata"]["name"]}
            status.update(
                currentCSV=target.name, installPlanGeneration=plan["spec"]["generation"],
                installplan={**plan_ref, "uuid": plan["metadata"]["uid"]},
                installPlanRef={**plan_ref, "namespace": ns, "uid": plan["metadata"]["uid"],
                                "resourceVersion": plan["metadata"]["resourceVersion"]})
            current, succeeded = target.name, False
        plan_name = (status.get("installplan") or {}).get("name")
        plan = self.get(G, "installplans", ns, plan_name) if plan_name else None
        phase = ((plan or {}).get("status") or {}).get("phase")
        if phase in ("RequiresApproval", "Installing") and not succeeded:
            conditions.append(condition("InstallPlanPending", True, phase, "", previous))
        head = pkg.head(channel)
        if succeeded and head is not None and status.get("installedCSV") == head.name:
            status["state"] = "AtLatestKnown"
        elif current:
            status["state"] = "UpgradePending"
        self._write_sub(sub, status, conditions)

    def _target(self, pkg: Any, channel: str, spec: dict[str, Any], installed: str | None,
                settled: bool) -> CsvVersion | None:
        entries = pkg.channels[channel]
        if not installed:
            wanted = spec.get("startingCSV") or entries[-1].name
            return next(e for e in entries if e.name == wanted)
        if not settled or installed == entries[-1].name:
            return None
        return next((e for e in entries if e.replaces == installed), entries[-1])

    def _write_sub(self, sub: dict[str, Any], status: dict[str, Any],
                   conditions: list[dict[str, Any]]) -> None:
        status["conditions"] = conditions
        before = {k: v for k, v in (sub.get("status") or {}).items() if k != "lastUpdated"}
        if before != {k: v for k, v in status.items() if k != "lastUpdated"}:
            status["lastUpdated"] = clock.now()
            self.set_status(G, "subscriptions", sub, status)

    def _create_plan(self, sub: dict[str, Any], target: CsvVersion) -> dict[str, Any] | None:
        ns = sub["metadata"]["namespace"]
        manual = sub["spec"].get("installPlanApproval") == "Manual"
        generation = len(self.list(G, "installplans", ns)) + 1
        plan = self.create(G, "installplans", {
            "metadata": {"generateName": "install-", "namespace": ns,
                         "ownerReferences": [owner_ref(sub, controller=False)],
                         "labels": {f"operators.coreos.com/{sub['spec']['name']}.{ns}": ""}},
            "spec": {"approval": "Manual" if manual else "Automatic", "approved": not manual,
                     "clusterServiceVersionNames": [target.name], "generation": generation}})
        if plan is not None:
            self.set_status(G, "installplans", plan, {
                "phase": "RequiresApproval" if manual else "Installing",
                "catalogSources": [sub["spec"].get("source", "")],
                "conditions": [condition("Installed", "Unknown", "" if not manual else
                                         "RequiresApproval")]})
        return plan

    # --- install plans -------------------------------------------------------------------
    def _install_plan(self, plan: dict[str, Any]) -> float | None:
        status = plan.get("status") or {}
        if status.get("phase") in ("Complete", "Failed", None):
            return None
        if not plan["spec"].get("approved"):
            if status.get("phase") != "RequiresApproval":
                self.set_status(G, "installplans", plan, dict(status, phase="RequiresApproval"))
            return None
        if status.get("phase") == "RequiresApproval":
            self.set_status(G, "installplans", plan, dict(status, phase="Installing"))
            return self.scaled(_STEP_SECONDS)
        wait = self._dwell(plan, "Installing")
        if wait > 0:
            return wait
        ns = plan["metadata"]["namespace"]
        steps = []
        for csv_name in plan["spec"]["clusterServiceVersionNames"]:
            pkg = self.catalog.package_of(csv_name)
            entry = pkg.find(csv_name) if pkg else None
            if pkg is None or entry is None:
                continue
            for crd_name in pkg.crds:
                ensure_crd(self, crd_name, {"olm.managed": "true"})
                steps.append({"resolving": csv_name, "status": "Created", "resource": {
                    "group": "apiextensions.k8s.io", "version": "v1",
                    "kind": "CustomResourceDefinition", "name": crd_name,
                    "sourceName": pkg.source, "sourceNamespace": MARKETPLACE}})
            self.create(G, "clusterserviceversions", {
                "metadata": {"name": csv_name, "namespace": ns,
                             "annotations": self.catalog.csv_annotations(pkg, entry),
                             "labels": {f"operators.coreos.com/{pkg.name}.{ns}": ""}},
                "spec": self.catalog.csv_spec(pkg, entry)})
            steps.append({"resolving": csv_name, "status": "Created", "resource": {
                "group": G, "version": "v1alpha1", "kind": "ClusterServiceVersion",
                "name": csv_name, "sourceName": pkg.source, "sourceNamespace": MARKETPLACE}})
        self.set_status(G, "installplans", plan, dict(status, phase="Complete", plan=steps,
                        conditions=[condition("Installed", True, previous=status.get(
                            "conditions"))]))
        return None

    # --- cluster service versions ------------------------------------------------------------
    def _csv(self, csv: dict[str, Any]) -> float | None:
        ns, name = csv["metadata"]["namespace"], csv["metadata"]["name"]
        status = csv.get("status") or {}
        phase = status.get("phase", "")
        groups = self.list(G, "operatorgroups", ns)
        if phase in ("", "Pending") or (phase == "Failed" and status.get("reason") in (
                "NoOperatorGroup", "TooManyOperatorGroups") and len(groups) == 1):
            if not groups:
                return self._phase(csv, "Failed", "NoOperatorGroup",
                                   "csv in namespace with no operatorgroups")
            if len(groups) > 1:
                return self._phase(csv, "Failed", "TooManyOperatorGroups",
                                   f"csv created in namespace with multiple operatorgroups, "
                                   f"can't pick one automatically: {ns}")
            if phase != "Pending":
                return self._phase(csv, "Pending", "RequirementsUnknown",
                                   "requirements not yet checked")
            if self._dwell(csv, "Pending") > 0:
                return self._dwell(csv, "Pending")
            return self._phase(csv, "InstallReady", "AllRequirementsMet",
                               "all requirements found, attempting install")
        if phase == "InstallReady":
            self._deploy(csv)
            return self._phase(csv, "Installing", "InstallWaiting",
                               "installing: waiting for deployment to become ready")
        if phase == "Installing":
            if name in self.catalog.failures:
                return self._phase(csv, "Failed", "InstallComponentFailed",
                                   self.catalog.failures[name])
            deployments = [d for d in self.list("apps", "deployments", ns) if owned_by(d, csv)]
            ready = deployments and all(
                (d.get("status") or {}).get("availableReplicas", 0) >= d["spec"]["replicas"]
                for d in deployments)
            if not ready or self._dwell(csv, "Installing") > 0:
                return self._dwell(csv, "Installing") or None
            return self._phase(csv, "Succeeded", "InstallSucceeded",
                               "install strategy completed with no errors")
        replaces = csv["spec"].get("replaces")
        if phase == "Succeeded" and replaces and self.get(
                G, "clusterserviceversions", ns, replaces) is not None:
            self.delete(G, "clusterserviceversions", ns, replaces)
        return None

    def _phase(self, csv: dict[str, Any], phase: str, reason: str, message: str) -> float | None:
        status = dict(csv.get("status") or {})
        if (status.get("phase"), status.get("reason")) == (phase, reason):
            return None
        now = clock.now()
        history = list(status.get("conditions") or [])
        history.append({"phase": phase, "reason": reason, "message": message,
                        "lastTransitionTime": now, "lastUpdateTime": now})
        status.update(phase=phase, reason=reason, message=message, lastTransitionTime=now,
                      lastUpdateTime=now, conditions=history[-10:],
                      requirementStatus=[{"group": "apiextensions.k8s.io", "version": "v1",
                                          "kind": "CustomResourceDefinition", "name": c["name"],
                                          "status": "Present", "uuid": "",
                                          "message": "CRD is present and Established condition "
                                                     "is true"}
                                         for c in csv["spec"].get("customresourcedefinitions",
                                                                  {}).get("owned", [])])
        self.set_status(G, "clusterserviceversions", csv, status)
        return self.scaled(_STEP_SECONDS)

    def _deploy(self, csv: dict[str, Any]) -> None:
        ns = csv["metadata"]["namespace"]
        for item in csv["spec"]["install"]["spec"]["deployments"]:
            body = {"metadata": {"name": item["name"], "namespace": ns,
                                 "ownerReferences": [owner_ref(csv)],
                                 "labels": {"olm.owner": csv["metadata"]["name"]}},
                    "spec": copy.deepcopy(item["spec"])}
            existing = self.get("apps", "deployments", ns, item["name"])
            if existing is None:
                self.create("apps", "deployments", body)
            else:  # an upgrade adopts the previous CSV's deployment
                self.patch("apps", "deployments", ns, item["name"], body)


_CLUSTER_SCOPED = ("clusterpolicies.nvidia.com", "nvidiadrivers.nvidia.com",
                   "nodefeaturerules.nfd.k8s-sigs.io",
                   "datascienceclusters.datasciencecluster.opendatahub.io",
                   "dscinitializations.dscinitialization.opendatahub.io")


def ensure_crd(controller, name: str, labels: dict[str, str]) -> None:
    """Create the CRD ``name`` from the upstream library (a permissive stand-in when the
    library lacks it), as an operator's install does; nothing when it exists."""
    if controller.get("apiextensions.k8s.io", "customresourcedefinitions", None,
                      name) is not None:
        return
    crd = controller.server.crd_library.get(name) or permissive_crd(
        name, olm_examples.kind_of(name),
        "Cluster" if name in _CLUSTER_SCOPED else "Namespaced")
    crd.pop("status", None)
    crd["metadata"] = {"name": name, "annotations": crd["metadata"].get("annotations") or {},
                       "labels": labels}
    controller.create("apiextensions.k8s.io", "customresourcedefinitions", crd)
