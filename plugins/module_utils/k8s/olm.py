# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Install an operator through OLM: resolve, subscribe, approve only the pinned CSV, wait.

1. ``resolve`` reads the PackageManifest (as OpenShift serves it from the catalogs) and
   refuses, before any write, an unknown package, a package of another catalog, a
   channel the package does not have and a pinned CSV that is not in the channel.
2. ``operator_group`` finds the namespace's OperatorGroup: OLM allows one per
   namespace, so an existing one with other target namespaces is a conflict.
3. ``ensure`` applies Namespace, OperatorGroup and Subscription (server-side apply).
4. ``wait_installed`` approves, with Manual approval, only an InstallPlan whose CSVs
   are all the target (the pinned CSV, the installed one, or the channel head when an
   upgrade is asked): a plan holding the target and other CSVs ends the wait with a
   ConflictError, unapproved; a plan without the target is left alone. It waits for
   that CSV to reach Succeeded and its owned CRDs to be Established. A CSV in phase
   Failed ends the wait with its reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    ConflictError,
    InvalidInputError,
    OperationFailedError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.wait import (
    WaitStatus,
    wait_for,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.pods import PodFaults

OLM_V1 = "operators.coreos.com/v1"
OLM_V1A1 = "operators.coreos.com/v1alpha1"
PACKAGES = "packages.operators.coreos.com/v1"
INSTALL_MODES = ("OwnNamespace", "SingleNamespace", "AllNamespaces")
# OpenShift's own namespace for operators of every namespace: the cluster makes it and its
# OperatorGroup, so neither is ever written (a second OperatorGroup there breaks OLM for
# every operator of the namespace, and a Namespace in a GitOps tree can be pruned).
GLOBAL_NAMESPACE = "openshift-operators"


@dataclass
class OperatorSpec:
    package: str
    namespace: str
    catalog: str
    catalog_namespace: str = "openshift-marketplace"
    channel: str | None = None
    starting_csv: str | None = None
    approval: str = "Manual"
    install_mode: str = "OwnNamespace"
    target_namespace: str | None = None
    upgrade: bool = False

    def targets(self) -> list[str] | None:
        if self.install_mode == "AllNamespaces":
            return None
        if self.install_mode == "SingleNamespace":
            if not self.target_namespace:
                raise InvalidInputError("install_mode SingleNamespace needs target_namespace")
            return [self.target_namespace]
        return [self.namespace]


@dataclass
class Resolved:
    channel: str
    csv: str  # what a fresh install gets: the pinned CSV or the channel head
    version: str
    head: str  # the channel's newest CSV
    entries: list


def _status(obj: dict | None) -> dict:
    return (obj or {}).get("status") or {}


def _phase_line(csv: dict | None) -> str:
    """``Installing (InstallWaiting: waiting for deployment x to become ready)``."""
    st = _status(csv)
    if not st.get("phase"):
        return "not created yet"
    why = ": ".join(x for x in (st.get("reason"), st.get("message")) if x)
    return f"{st['phase']} ({why})" if why else st["phase"]


def operator_manifests(spec: OperatorSpec, channel: str, group: str | None) -> list:
    """Namespace, OperatorGroup (unless ``group``, an existing one, is reused) and
    Subscription: what ``ensure`` applies (and the GitOps export writes). In
    ``GLOBAL_NAMESPACE`` the Subscription alone."""
    out = []
    if spec.namespace != GLOBAL_NAMESPACE:
        out.append({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": spec.namespace}})
        if group is None:
            og_spec = {} if spec.targets() is None else {"targetNamespaces": spec.targets()}
            out.append({"apiVersion": OLM_V1, "kind": "OperatorGroup",
                        "metadata": {"name": spec.namespace, "namespace": spec.namespace},
                        "spec": og_spec})
    sub = {"channel": channel, "name": spec.package, "source": spec.catalog,
           "sourceNamespace": spec.catalog_namespace,
           "installPlanApproval": spec.approval}
    if spec.starting_csv:
        sub["startingCSV"] = spec.starting_csv
    out.append({"apiVersion": OLM_V1A1, "kind": "Subscription",
                "metadata": {"name": spec.package, "namespace": spec.namespace},
                "spec": sub})
    return out


class OlmOperator:
    def __init__(self, client):
        self.client = client

    # --- 1. resolve -------------------------------------------------------------------
    def resolve(self, spec: OperatorSpec) -> Resolved:
        if spec.approval not in ("Manual", "Automatic"):
            raise InvalidInputError(f"approval must be Manual or Automatic, not {spec.approval}")
        if spec.install_mode not in INSTALL_MODES:
            raise InvalidInputError(f"install_mode must be one of {', '.join(INSTALL_MODES)}")
        spec.targets()
        pm = self.client.get(PACKAGES, "PackageManifest", spec.package, spec.catalog_namespace)
        if pm is None:
            known = sorted(p["metadata"]["name"] for p in self.client.list(
                PACKAGES, "PackageManifest", spec.catalog_namespace)
                if _status(p).get("catalogSource") == spec.catalog)
            raise InvalidInputError(
                f"package {spec.package} is not in any catalog of {spec.catalog_namespace}; "
                f"catalog {spec.catalog} has: {', '.join(known) or 'nothing (unknown catalog?)'}")
        status = _status(pm)
        if status.get("catalogSource") != spec.catalog:
            raise InvalidInputError(
                f"package {spec.package} comes from catalog {status.get('catalogSource')}, "
                f"not {spec.catalog}")
        channels = {c["name"]: c for c in status.get("channels") or []}
        channel = spec.channel or status.get("defaultChannel")
        if channel not in channels:
            raise InvalidInputError(
                f"package {spec.package} has no channel {channel}; channels: "
                f"{', '.join(sorted(channels))}")
        entries = channels[channel].get("entries") or []
        names = {e["name"]: e.get("version", "") for e in entries}
        head = channels[channel]["currentCSV"]
        if spec.starting_csv and spec.starting_csv not in names:
            raise InvalidInputError(
                f"CSV {spec.starting_csv} is not in channel {channel} of {spec.package}; "
                f"the channel has: {', '.join(names)}")
        csv = spec.starting_csv or head
        return Resolved(channel=channel, csv=csv, version=names.get(csv, ""), head=head,
                        entries=list(names))

    # --- 2. the namespace's OperatorGroup -----------------------------------------------
    def operator_group(self, spec: OperatorSpec) -> str | None:
        """The existing OperatorGroup to reuse (None: we create ours); conflicts refused."""
        groups = self.client.list(OLM_V1, "OperatorGroup", spec.namespace)
        if not groups:
            return None
        if len(groups) > 1:
            raise ConflictError(f"namespace {spec.namespace} has {len(groups)} OperatorGroups "
                                "(OLM allows one); remove the extra ones")
        group = groups[0]
        have = (group.get("spec") or {}).get("targetNamespaces") or None
        want = spec.targets()
        if sorted(have or []) != sorted(want or []):
            raise ConflictError(
                f"namespace {spec.namespace} already has OperatorGroup "
                f"{group['metadata']['name']} targeting {have or 'all namespaces'}, but "
                f"install_mode {spec.install_mode} needs {want or 'all namespaces'}")
        return group["metadata"]["name"]

    # --- 3. the writes ------------------------------------------------------------------
    def manifests(self, spec: OperatorSpec, resolved: Resolved, group: str | None) -> list:
        return operator_manifests(spec, resolved.channel, group)

    def ensure(self, spec: OperatorSpec, resolved: Resolved, group: str | None,
               check_mode: bool) -> tuple[list, dict]:
        changed, diffs = [], {}
        for manifest in self.manifests(spec, resolved, group):
            result = self.client.apply(manifest, check_mode=check_mode)
            if result.changed:
                ref = f"{manifest['kind']}/{manifest['metadata']['name']}"
                changed.append(ref)
                diffs[ref] = result.diff
        return changed, diffs

    # --- 4. approve and wait ------------------------------------------------------------
    def target_csv(self, spec: OperatorSpec, resolved: Resolved) -> str:
        sub = self.client.get(OLM_V1A1, "Subscription", spec.package, spec.namespace)
        installed = _status(sub).get("installedCSV")
        if spec.upgrade:
            return resolved.head
        return installed or resolved.csv

    def _approve(self, spec: OperatorSpec, target: str, approved: list, skipped: list) -> None:
        sub = self.client.get(OLM_V1A1, "Subscription", spec.package, spec.namespace)
        ref = _status(sub).get("installPlanRef") or {}
        if not ref.get("name"):
            return
        plan = self.client.get(OLM_V1A1, "InstallPlan", ref["name"], spec.namespace)
        if plan is None or (plan.get("spec") or {}).get("approved"):
            return
        csvs = (plan.get("spec") or {}).get("clusterServiceVersionNames") or []
        others = sorted(set(csvs) - {target})
        if target in csvs and others:
            # approving would also install what was never pinned (another version, a
            # dependency): a person decides that, not this module
            raise ConflictError(
                f"InstallPlan {spec.namespace}/{ref['name']} installs {', '.join(others)} "
                f"besides {target}; only a plan of {target} alone is approved. Review the "
                "plan and approve it by hand, or pin the CSV the plan installs",
                install_plan=ref["name"], csvs=sorted(csvs), target_csv=target)
        if target in csvs:
            self.client.apply({"apiVersion": OLM_V1A1, "kind": "InstallPlan",
                               "metadata": {"name": ref["name"], "namespace": spec.namespace},
                               "spec": {"approved": True}},
                              check_mode=False, force_conflicts=True)
            approved.append(ref["name"])
        elif ref["name"] not in skipped:
            skipped.append(ref["name"])

    def _crds_established(self, csv: dict) -> tuple[list, list]:
        owned = [c["name"] for c in ((csv.get("spec") or {}).get("customresourcedefinitions")
                                     or {}).get("owned") or []]
        ready, missing = [], []
        for name in owned:
            crd = self.client.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)
            ok = any(c.get("type") == "Established" and c.get("status") == "True"
                     for c in _status(crd).get("conditions") or [])
            (ready if ok else missing).append(name)
        return ready, missing

    def _operator_pods(self, csv: dict | None) -> list:
        """The pods of the CSV's deployments (by each deployment's selector)."""
        pods = []
        install = (((csv or {}).get("spec") or {}).get("install") or {}).get("spec") or {}
        for item in install.get("deployments") or []:
            labels = ((item.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            if labels:
                pods += self.client.list("v1", "Pod", csv["metadata"].get("namespace"),
                                         label_selector=",".join(
                                             f"{k}={v}" for k, v in sorted(labels.items())))
        return pods

    def wait_installed(self, spec: OperatorSpec, target: str, timeout: float,
                       progress=None, **kwargs) -> dict:
        approved, skipped, seen = [], [], {}
        faults = PodFaults()  # an operator pod that cannot start ends the wait (pods.py)

        def _check() -> WaitStatus:
            if spec.approval == "Manual":
                self._approve(spec, target, approved, skipped)
            csv = self.client.get(OLM_V1A1, "ClusterServiceVersion", target, spec.namespace)
            phase = _status(csv).get("phase", "")
            if phase == "Failed":
                st = _status(csv)
                raise OperationFailedError(
                    f"CSV {target} failed: {st.get('reason', '')}: {st.get('message', '')}",
                    reason=st.get("reason"))
            if phase != "Succeeded":
                faults.check(self._operator_pods(csv), f"operator {spec.package}")
                return WaitStatus(done=False, missing=(f"CSV {target} (phase {phase or 'none'})",),
                                  progress=f"CSV {target}: {_phase_line(csv)}")
            ready, missing = self._crds_established(csv)
            seen["csv"], seen["crds"] = csv, ready
            return WaitStatus(done=not missing, present=tuple(ready),
                              missing=tuple(f"CRD {m} Established" for m in missing),
                              progress=f"CSV {target} Succeeded, {len(ready)} of "
                                       f"{len(ready) + len(missing)} CRDs Established")

        status = wait_for(_check, timeout=timeout, what=f"operator {spec.package}",
                          progress=progress, **kwargs)
        if status.skipped:  # check mode: nothing was written, so nothing to wait for
            return {"csv": target, "version": "", "alm_examples": [], "crds": [],
                    "approved_install_plans": [], "unapproved_install_plans": []}
        csv = seen["csv"]
        annotations = csv["metadata"].get("annotations") or {}
        try:
            examples = json.loads(annotations.get("alm-examples") or "[]")
        except ValueError:
            examples = []
        return {"csv": target, "version": (csv.get("spec") or {}).get("version", ""),
                "alm_examples": examples, "crds": seen["crds"],
                "approved_install_plans": approved, "unapproved_install_plans": skipped}
