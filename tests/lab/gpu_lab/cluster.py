"""The cluster the lab boots: OpenShift API types, nodes, namespaces, storage classes,
SecurityContextConstraints, ClusterVersion, OLM's CRDs and catalog sources.

``seed`` is idempotent: on a restored lab it only adds what is missing and brings the
reported OpenShift version and the worker count in line with the settings.
"""

from __future__ import annotations

import logging
from typing import Any

from .apiserver import clock
from .apiserver.crds import CrdLibrary, permissive_crd, types_for_crd
from .apiserver.errors import ApiError
from .apiserver.resources import Registry, ResourceType
from .apiserver.service import ApiService, Context
from .config import LabSettings

log = logging.getLogger(__name__)

SEED = Context(user="system:gpu-lab", field_manager="gpu-lab-bootstrap", internal=True)
NAMESPACES = (
    "default", "kube-system", "kube-public", "kube-node-lease", "openshift",
    "openshift-config", "openshift-operators", "openshift-marketplace",
    "openshift-operator-lifecycle-manager", "openshift-monitoring", "openshift-ingress",
)
CATALOG_SOURCES = {
    "redhat-operators": "Red Hat Operators",
    "certified-operators": "Certified Operators",
    "community-operators": "Community Operators",
    "redhat-marketplace": "Red Hat Marketplace",
}
STORAGE_CLASSES = (
    ("thin-csi", "csi.vsphere.vmware.com", "WaitForFirstConsumer", True),
    ("nfs-csi", "nfs.csi.k8s.io", "Immediate", False),
)
_SCCS = {
    "restricted-v2": {"runAsUser": {"type": "MustRunAsRange"}, "allowPrivilegeEscalation": False,
                      "requiredDropCapabilities": ["ALL"]},
    "nonroot-v2": {"runAsUser": {"type": "MustRunAsNonRoot"},
                   "allowPrivilegeEscalation": False, "requiredDropCapabilities": ["ALL"]},
    "anyuid": {"runAsUser": {"type": "RunAsAny"}, "priority": 10},
    "privileged": {"runAsUser": {"type": "RunAsAny"}, "allowPrivilegedContainer": True,
                   "allowHostNetwork": True, "allowHostPID": True, "allowHostIPC": True,
                   "allowHostDirVolumePlugin": True, "allowedCapabilities": ["*"]},
}


def _permissive(kind: str, group: str, plural: str, namespaced: bool) -> ResourceType:
    return ResourceType(group=group, version="v1", kind=kind, plural=plural,
                        namespaced=namespaced)


def register_openshift_types(registry: Registry, library: CrdLibrary) -> None:
    """Types the OpenShift API server serves natively (not as CRDs)."""
    route = library.get("routes.route.openshift.io") or permissive_crd(
        "routes.route.openshift.io", "Route")
    for rt in types_for_crd(route):
        rt.builtin = True
        registry.add(rt)
    registry.add(_permissive("ClusterVersion", "config.openshift.io", "clusterversions", False))
    registry.add(_permissive("ClusterOperator", "config.openshift.io", "clusteroperators", False))
    registry.add(ResourceType(group="project.openshift.io", version="v1", kind="Project",
                              plural="projects", namespaced=False, subresources=(),
                              verbs=("get", "list", "watch")))


def _ensure(service: ApiService, group: str, plural: str, body: dict[str, Any]) -> None:
    rt = service.rt(group, plural)
    meta = body["metadata"]
    if service.store.get(rt.key, meta.get("namespace", ""), meta["name"]) is None:
        body.setdefault("apiVersion", rt.api_version)
        body.setdefault("kind", rt.kind)
        service.create(rt, meta.get("namespace"), body, SEED)


def _node(settings: LabSettings, name: str, index: int, master: bool) -> dict[str, Any]:
    labels = {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name,
              "kubernetes.io/os": "linux", "node.openshift.io/os_id": "rhcos"}
    cpu, memory = ("8", "32855460Ki") if master else ("32", "263921212Ki")
    if master:
        labels.update({"node-role.kubernetes.io/master": "",
                       "node-role.kubernetes.io/control-plane": ""})
    else:
        labels["node-role.kubernetes.io/worker"] = ""
    resources = {"cpu": cpu, "memory": memory, "pods": "250", "ephemeral-storage": "125293548Ki",
                 "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
    now = clock.now()
    conditions = [
        {"type": t, "status": "False", "reason": r, "message": m, "lastHeartbeatTime": now,
         "lastTransitionTime": now}
        for t, r, m in (("MemoryPressure", "KubeletHasSufficientMemory",
                         "kubelet has sufficient memory available"),
                        ("DiskPressure", "KubeletHasNoDiskPressure",
                         "kubelet has no disk pressure"),
                        ("PIDPressure", "KubeletHasSufficientPID",
                         "kubelet has sufficient PID available"))
    ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady",
          "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
          "lastTransitionTime": now}]
    return {
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"gpu-lab.llmops.io/vm-name": name}},
        "spec": {"taints": [{"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"}]}
        if master else {},
        "status": {
            "capacity": dict(resources), "allocatable": dict(resources),
            "conditions": conditions,
            "addresses": [{"type": "InternalIP",
                           "address": f"192.0.2.{(10 if master else 20) + index}"},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": settings.kube_version, "architecture": "amd64",
                         "operatingSystem": "linux",
                         "containerRuntimeVersion": f"cri-o://{settings.kube_version[1:]}",
                         "osImage": "Red Hat Enterprise Linux CoreOS "
                         f"{settings.ocp_version.replace('.', '')[:3]}.94.202505061234-0",
                         "kernelVersion": "5.14.0-427.65.1.el9_4.x86_64",
                         "kubeProxyVersion": settings.kube_version,
                         "machineID": f"{index:032x}", "systemUUID": f"lab-{name}",
                         "bootID": f"boot-{name}"},
        },
    }


def seed(service: ApiService, settings: LabSettings, library: CrdLibrary) -> None:
    for ns in NAMESPACES:
        _ensure(service, "", "namespaces", {"metadata": {"name": ns}})
    for i in range(settings.control_planes):
        _ensure(service, "", "nodes", _node(settings, f"ocp-master-{i}", i, True))
    for i in range(settings.workers):
        _ensure(service, "", "nodes", _node(settings, f"ocp-worker-{i}", i, False))
    nodes = service.rt("", "nodes")
    for node in service.store.list(nodes.key):
        name = node["metadata"]["name"]
        if name.startswith("ocp-worker-") and int(name.rsplit("-", 1)[1]) >= settings.workers:
            service.delete(nodes, None, name, SEED, {"gracePeriodSeconds": 0})
    for name, provisioner, binding, default in STORAGE_CLASSES:
        annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
        _ensure(service, "storage.k8s.io", "storageclasses", {
            "metadata": {"name": name, "annotations": annotations},
            "provisioner": provisioner, "reclaimPolicy": "Delete",
            "volumeBindingMode": binding, "allowVolumeExpansion": True})
    for name, value in (("system-cluster-critical", 2000000000),
                        ("system-node-critical", 2000001000)):
        _ensure(service, "scheduling.k8s.io", "priorityclasses", {
            "metadata": {"name": name}, "value": value, "preemptionPolicy":
            "PreemptLowerPriority", "description": "Used for system critical pods."})
    _seed_crds(service, library)
    _seed_sccs(service)
    _seed_cluster_version(service, settings)
    minor = ".".join(settings.ocp_version.split(".")[:2])
    for name, display in CATALOG_SOURCES.items():
        _ensure(service, "operators.coreos.com", "catalogsources", {
            "metadata": {"name": name, "namespace": "openshift-marketplace"},
            "spec": {"sourceType": "grpc", "displayName": display, "publisher": "Red Hat",
                     "image": f"registry.redhat.io/redhat/{name}-index:v{minor}",
                     "updateStrategy": {"registryPoll": {"interval": "10m"}}}})
    _ensure(service, "operators.coreos.com", "operatorgroups", {
        "metadata": {"name": "global-operators", "namespace": "openshift-operators"},
        "spec": {}})


def _seed_crds(service: ApiService, library: CrdLibrary) -> None:
    wanted = ["securitycontextconstraints.security.openshift.io"]
    if library.available:
        wanted += [n for n in library.names() if n.endswith(".operators.coreos.com")]
        # OpenShift's cluster monitoring ships the Prometheus Operator's CRDs
        wanted += [n for n in library.names() if n.endswith(".monitoring.coreos.com")]
    else:
        log.warning("no upstream CRDs at %s: OLM and OpenShift kinds get permissive schemas",
                    library.directory)
        wanted += [f"{p}.operators.coreos.com" for p in (
            "subscriptions", "installplans", "clusterserviceversions", "catalogsources",
            "operatorgroups", "operatorconditions", "operators", "olmconfigs")]
        wanted += [f"{p}.monitoring.coreos.com" for p in (
            "servicemonitors", "podmonitors", "prometheusrules")]
    for name in wanted:
        crd = library.get(name)
        if crd is None:
            kind = {"securitycontextconstraints": "SecurityContextConstraints",
                    "olmconfigs": "OLMConfig"}.get(name.split(".", 1)[0]) or _kind_of(name)
            scope = "Cluster" if name.split(".", 1)[0] in (
                "securitycontextconstraints", "operators", "olmconfigs") else "Namespaced"
            version = "v1" if name.startswith(("securitycontext", "operatorgroups", "olmconfigs",
                                               "operators.")) or name.endswith(
                ".monitoring.coreos.com") else "v1alpha1"
            crd = permissive_crd(name, kind, scope, version)
        crd.pop("status", None)
        crd["metadata"] = {"name": crd["metadata"]["name"],
                           "annotations": crd["metadata"].get("annotations") or {}}
        _ensure(service, "apiextensions.k8s.io", "customresourcedefinitions", crd)


def _kind_of(name: str) -> str:
    plural = name.split(".")[0]
    special = {"installplans": "InstallPlan", "clusterserviceversions": "ClusterServiceVersion",
               "catalogsources": "CatalogSource", "operatorgroups": "OperatorGroup",
               "operatorconditions": "OperatorCondition", "subscriptions": "Subscription",
               "operators": "Operator", "servicemonitors": "ServiceMonitor",
               "podmonitors": "PodMonitor", "prometheusrules": "PrometheusRule"}
    return special.get(plural, plural[:-1].capitalize())


def _seed_sccs(service: ApiService) -> None:
    for name, extra in _SCCS.items():
        body = {"metadata": {"name": name}, "allowHostDirVolumePlugin": False,
                "allowHostIPC": False, "allowHostNetwork": False, "allowHostPID": False,
                "allowHostPorts": False, "allowPrivilegedContainer": False,
                "readOnlyRootFilesystem": False, "seLinuxContext": {"type": "MustRunAs"},
                "fsGroup": {"type": "MustRunAs"}, "supplementalGroups": {"type": "RunAsAny"},
                "volumes": ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                            "persistentVolumeClaim", "projected", "secret"],
                "users": [], "groups": ["system:authenticated"] if name == "restricted-v2"
                else [], "allowedCapabilities": None, "defaultAddCapabilities": None,
                "requiredDropCapabilities": None, "priority": None}
        body.update(extra)
        try:
            _ensure(service, "security.openshift.io", "securitycontextconstraints", body)
        except ApiError as exc:
            log.warning("SCC %s not seeded: %s", name, exc.message)


def _seed_cluster_version(service: ApiService, settings: LabSettings) -> None:
    rt = service.rt("config.openshift.io", "clusterversions")
    version = settings.ocp_version
    minor = ".".join(version.split(".")[:2])
    now = clock.now()
    status = {
        "desired": {"version": version, "image": f"quay.io/openshift-release-dev/ocp-release:"
                    f"{version}-x86_64", "channels": [f"stable-{minor}", f"fast-{minor}"]},
        "history": [{"state": "Completed", "version": version, "startedTime": now,
                     "completionTime": now, "verified": False,
                     "image": f"quay.io/openshift-release-dev/ocp-release:{version}-x86_64"}],
        "observedGeneration": 1, "versionHash": "lab", "availableUpdates": None,
        "conditions": [
            {"type": "Available", "status": "True", "lastTransitionTime": now,
             "message": f"Done applying {version}"},
            {"type": "Failing", "status": "False", "lastTransitionTime": now},
            {"type": "Progressing", "status": "False", "lastTransitionTime": now,
             "message": f"Cluster version is {version}"},
        ],
    }
    existing = service.store.get(rt.key, "", "version")
    if existing is None:
        _ensure(service, "config.openshift.io", "clusterversions", {
            "metadata": {"name": "version"},
            "spec": {"clusterID": clock.new_uid(), "channel": f"stable-{minor}"},
            "status": status})
    elif (existing.get("status") or {}).get("desired", {}).get("version") != version:
        service.patch(rt, None, "version", "application/merge-patch+json",
                      {"status": status}, SEED, "status")
