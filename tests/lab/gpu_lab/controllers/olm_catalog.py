"""The lab's operator catalogs: packages, channels and CSV versions, and the
``packages.operators.coreos.com/v1`` PackageManifest read API OpenShift serves from them.

Five packages: ``nfd`` (redhat-operators), ``gpu-operator-certified``
(certified-operators), ``kuberay-operator`` (community-operators; a lab stand-in:
upstream KubeRay ships Helm/kustomize, not a confirmed OLM bundle), and the two
distributions of the Open Data Hub operator: ``rhods-operator`` (Red Hat OpenShift AI,
redhat-operators) and ``opendatahub-operator`` (community-operators), which own the
DataScienceCluster and DSCInitialization CRDs (the KServe CRDs come later, from the
DataScienceCluster: ``opendatahub.py``). Tests can publish a
newer CSV into a channel and make a CSV fail through ``/lab/olm/...``; both persist in
``$GPU_LAB_HOME/k8s/catalog.json``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..apiserver import clock
from ..apiserver.errors import bad_request, not_found
from . import olm_examples

MARKETPLACE = "openshift-marketplace"


@dataclass
class CsvVersion:
    name: str
    version: str
    replaces: str | None = None


@dataclass
class Package:
    name: str
    source: str
    provider: str
    display_name: str
    default_channel: str
    suggested_namespace: str
    crds: list[str]
    deployments: list[tuple[str, str]]  # (deployment name, image with {version})
    channels: dict[str, list[CsvVersion]] = field(default_factory=dict)

    def head(self, channel: str) -> CsvVersion | None:
        entries = self.channels.get(channel) or []
        return entries[-1] if entries else None

    def find(self, csv: str) -> CsvVersion | None:
        return next((v for vs in self.channels.values() for v in vs if v.name == csv), None)


def _chain(prefix: str, versions: list[str]) -> list[CsvVersion]:
    out: list[CsvVersion] = []
    for v in versions:
        out.append(CsvVersion(f"{prefix}.v{v}", v, out[-1].name if out else None))
    return out


def default_packages() -> dict[str, Package]:
    nfd = Package("nfd", "redhat-operators", "Red Hat", "Node Feature Discovery Operator",
                  "stable", "openshift-nfd",
                  ["nodefeaturediscoveries.nfd.openshift.io", "nodefeaturerules.nfd.openshift.io",
                   "nodefeatures.nfd.k8s-sigs.io", "nodefeaturegroups.nfd.k8s-sigs.io",
                   "nodefeaturerules.nfd.k8s-sigs.io"],
                  [("nfd-controller-manager",
                    "registry.redhat.io/openshift4/ose-cluster-nfd-operator:v{version}")])
    nfd.channels["stable"] = [CsvVersion("nfd.4.18.0-202505061007", "4.18.0-202505061007")]
    gpu = Package("gpu-operator-certified", "certified-operators", "NVIDIA Corporation",
                  "NVIDIA GPU Operator", "v25.3", "nvidia-gpu-operator",
                  ["clusterpolicies.nvidia.com", "nvidiadrivers.nvidia.com"],
                  [("gpu-operator", "nvcr.io/nvidia/gpu-operator:v{version}")])
    gpu.channels["v24.9"] = _chain("gpu-operator-certified", ["24.9.1", "24.9.2"])
    gpu.channels["v25.3"] = _chain("gpu-operator-certified", ["25.3.0", "25.3.1"])
    gpu.channels["stable"] = [CsvVersion("gpu-operator-certified.v25.3.1", "25.3.1",
                                         "gpu-operator-certified.v24.9.2")]
    ray = Package("kuberay-operator", "community-operators", "The KubeRay Community",
                  "KubeRay Operator", "stable", "kuberay-operator",
                  ["rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io"],
                  [("kuberay-operator", "quay.io/kuberay/operator:v{version}")])
    ray.channels["stable"] = _chain("kuberay-operator", ["1.3.2", "1.4.2"])
    platform_crds = ["datascienceclusters.datasciencecluster.opendatahub.io",
                     "dscinitializations.dscinitialization.opendatahub.io"]
    rhoai = Package("rhods-operator", "redhat-operators", "Red Hat", "Red Hat OpenShift AI",
                    "stable", "redhat-ods-operator", platform_crds,
                    [("rhods-operator", "registry.example.com/rhoai/operator:v{version}")])
    rhoai.channels["stable"] = _chain("rhods-operator", ["2.25.0", "3.0.0"])
    odh = Package("opendatahub-operator", "community-operators", "ODH", "Open Data Hub Operator",
                  "fast", "openshift-operators", platform_crds,
                  [("opendatahub-operator", "registry.example.com/odh/operator:v{version}")])
    odh.channels["fast"] = _chain("opendatahub-operator", ["2.35.0", "3.0.0"])
    return {p.name: p for p in (nfd, gpu, ray, rhoai, odh)}


class Catalog:
    """Packages plus the lab's changes (published CSVs, failures), persisted as JSON."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.packages = default_packages()
        self.failures: dict[str, str] = {}
        self.published: list[dict[str, str]] = []
        if path.exists():
            data = json.loads(path.read_text())
            self.failures = data.get("failures", {})
            for entry in data.get("published", []):
                self._publish(entry["package"], entry["channel"], entry["version"])

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"failures": self.failures,
                                         "published": self.published}, indent=1))

    def _publish(self, package: str, channel: str, version: str) -> CsvVersion:
        pkg = self.packages.get(package)
        if pkg is None:
            raise bad_request(f"no package {package!r} in the lab catalogs")
        entries = pkg.channels.setdefault(channel, [])
        csv = CsvVersion(f"{package}.v{version}", version, entries[-1].name if entries else None)
        if any(e.name == csv.name for e in entries):
            raise bad_request(f"{csv.name} is already in channel {channel}")
        entries.append(csv)
        self.published.append({"package": package, "channel": channel, "version": version})
        return csv

    def publish(self, package: str, channel: str, version: str) -> CsvVersion:
        csv = self._publish(package, channel, version)
        self._save()
        return csv

    def fail(self, csv: str, message: str) -> None:
        self.failures[csv] = message
        self._save()

    def package_of(self, csv: str) -> Package | None:
        return next((p for p in self.packages.values() if p.find(csv)), None)

    def describe(self) -> dict[str, Any]:
        return {"packages": {name: {"source": p.source, "defaultChannel": p.default_channel,
                                    "channels": {c: [asdict(v) for v in vs]
                                                 for c, vs in p.channels.items()}}
                             for name, p in self.packages.items()},
                "failures": self.failures}

    # --- what a CSV looks like -------------------------------------------------------------
    def csv_spec(self, pkg: Package, csv: CsvVersion) -> dict[str, Any]:
        return {
            "displayName": pkg.display_name, "version": csv.version,
            "provider": {"name": pkg.provider}, "maturity": "stable",
            "description": f"{pkg.display_name} (gpu-lab catalog entry)",
            **({"replaces": csv.replaces} if csv.replaces else {}),
            "installModes": [{"type": t, "supported": t != "MultiNamespace"} for t in
                             ("OwnNamespace", "SingleNamespace", "MultiNamespace",
                              "AllNamespaces")],
            "customresourcedefinitions": {"owned": [
                {"name": crd, "version": "v1", "kind": olm_examples.kind_of(crd),
                 "displayName": olm_examples.kind_of(crd)} for crd in pkg.crds]},
            "install": {"strategy": "deployment", "spec": {"deployments": [
                {"name": name, "spec": _operator_deployment(name, image.format(
                    version=csv.version))} for name, image in pkg.deployments]}},
        }

    def csv_annotations(self, pkg: Package, csv: CsvVersion) -> dict[str, str]:
        return {"alm-examples": json.dumps(olm_examples.examples(pkg.name, csv.version)),
                "operatorframework.io/suggested-namespace": pkg.suggested_namespace,
                "operators.operatorframework.io/builder": "gpu-lab",
                "capabilities": "Deep Insights", "containerImage": pkg.deployments[0][1].format(
                    version=csv.version)}


def _operator_deployment(name: str, image: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                {"name": "manager", "image": image,
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}}


class PackageManifests:
    """The read-only ``packagemanifests`` resource computed from the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.created = clock.now()

    def _manifest(self, pkg: Package, namespace: str | None) -> dict[str, Any]:
        channels = []
        for name, entries in pkg.channels.items():
            head = entries[-1]
            channels.append({
                "name": name, "currentCSV": head.name,
                "currentCSVDesc": {**copy.deepcopy(self.catalog.csv_spec(pkg, head)),
                                   "annotations": self.catalog.csv_annotations(pkg, head)},
                "entries": [{"name": e.name, "version": e.version} for e in reversed(entries)],
            })
        return {
            "apiVersion": "packages.operators.coreos.com/v1", "kind": "PackageManifest",
            "metadata": {"name": pkg.name, "namespace": namespace or MARKETPLACE,
                         "creationTimestamp": self.created,
                         "labels": {"catalog": pkg.source, "catalog-namespace": MARKETPLACE,
                                    "provider": pkg.provider,
                                    "operatorframework.io/arch.amd64": "supported",
                                    "operatorframework.io/os.linux": "supported"}},
            "spec": {},
            "status": {"catalogSource": pkg.source, "catalogSourceNamespace": MARKETPLACE,
                       "catalogSourceDisplayName": pkg.source.replace("-", " ").title(),
                       "catalogSourcePublisher": "Red Hat", "packageName": pkg.name,
                       "provider": {"name": pkg.provider},
                       "defaultChannel": pkg.default_channel, "channels": channels},
        }

    def get(self, namespace: str | None, name: str) -> dict[str, Any]:
        pkg = self.catalog.packages.get(name)
        if pkg is None:
            raise not_found("packagemanifests", "packages.operators.coreos.com", name)
        return self._manifest(pkg, namespace)

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        return [self._manifest(p, namespace) for p in self.catalog.packages.values()]
