"""The ``alm-examples`` of the lab's CSVs: sample custom resources an operator ships.

They follow the upstream samples but are valid against the upstream CRDs as published
(no null placeholders: the real API server refuses those under server-side apply).
"""

from __future__ import annotations

from typing import Any

_KINDS = {
    "nodefeaturediscoveries.nfd.openshift.io": "NodeFeatureDiscovery",
    "nodefeaturerules.nfd.openshift.io": "NodeFeatureRule",
    "nodefeatures.nfd.k8s-sigs.io": "NodeFeature",
    "nodefeaturegroups.nfd.k8s-sigs.io": "NodeFeatureGroup",
    "nodefeaturerules.nfd.k8s-sigs.io": "NodeFeatureRule",
    "clusterpolicies.nvidia.com": "ClusterPolicy",
    "nvidiadrivers.nvidia.com": "NVIDIADriver",
    "rayclusters.ray.io": "RayCluster",
    "rayjobs.ray.io": "RayJob",
    "rayservices.ray.io": "RayService",
    "datascienceclusters.datasciencecluster.opendatahub.io": "DataScienceCluster",
    "dscinitializations.dscinitialization.opendatahub.io": "DSCInitialization",
}


def kind_of(crd: str) -> str:
    return _KINDS.get(crd, crd.split(".")[0].rstrip("s").capitalize())


def _cluster_policy(version: str) -> dict[str, Any]:
    return {
        "apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy",
        "metadata": {"name": "gpu-cluster-policy"},
        "spec": {
            "operator": {"defaultRuntime": "crio", "use_ocp_driver_toolkit": True,
                         "initContainer": {}},
            "sandboxWorkloads": {"enabled": False, "defaultWorkload": "container"},
            "driver": {"enabled": True, "useNvidiaDriverCRD": False, "useOpenKernelModules": False,
                       "upgradePolicy": {"autoUpgrade": True, "drain": {"deleteEmptyDir": False,
                                                                        "enable": False,
                                                                        "force": False,
                                                                        "timeoutSeconds": 300},
                                         "maxParallelUpgrades": 1, "maxUnavailable": "25%",
                                         "podDeletion": {"deleteEmptyDir": False,
                                                         "force": False, "timeoutSeconds": 300},
                                         "waitForCompletion": {"timeoutSeconds": 0}},
                       "repoConfig": {"configMapName": ""}, "certConfig": {"name": ""},
                       "licensingConfig": {"nlsEnabled": True, "configMapName": ""},
                       "virtualTopology": {"config": ""}, "kernelModuleConfig": {"name": ""}},
            "dcgmExporter": {"enabled": True, "config": {"name": ""},
                             "serviceMonitor": {"enabled": True}},
            "dcgm": {"enabled": True},
            "daemonsets": {"updateStrategy": "RollingUpdate",
                           "rollingUpdate": {"maxUnavailable": "1"}},
            "devicePlugin": {"enabled": True, "config": {"name": "", "default": ""},
                             "mps": {"root": "/run/nvidia/mps"}},
            "gfd": {"enabled": True},
            "migManager": {"enabled": True},
            "nodeStatusExporter": {"enabled": True},
            "mig": {"strategy": "single"},
            "toolkit": {"enabled": True, "installDir": "/usr/local/nvidia"},
            "validator": {"plugin": {"env": [{"name": "WITH_WORKLOAD", "value": "false"}]}},
            "vgpuManager": {"enabled": False},
            "vgpuDeviceManager": {"enabled": True},
            "sandboxDevicePlugin": {"enabled": True},
            "vfioManager": {"enabled": True},
            "gds": {"enabled": False},
            "gdrcopy": {"enabled": False},
        },
    }


def _nfd(version: str) -> dict[str, Any]:
    minor = ".".join(version.split(".")[:2])
    return {
        "apiVersion": "nfd.openshift.io/v1", "kind": "NodeFeatureDiscovery",
        "metadata": {"name": "nfd-instance", "namespace": "openshift-nfd"},
        "spec": {
            "operand": {"image": f"registry.redhat.io/openshift4/ose-node-feature-discovery-rhel9"
                                 f":v{minor}", "imagePullPolicy": "Always",
                        "servicePort": 12000},
            "workerConfig": {"configData": "core:\n  sleepInterval: 60s\nsources:\n  pci:\n"
                                           "    deviceClassWhitelist:\n      - \"0200\"\n"
                                           "      - \"03\"\n      - \"12\"\n"
                                           "    deviceLabelFields:\n      - \"vendor\"\n"},
        },
    }


def _raycluster(version: str) -> dict[str, Any]:
    container = {"image": "rayproject/ray:2.49.0",
                 "resources": {"limits": {"cpu": "1", "memory": "2Gi"},
                               "requests": {"cpu": "500m", "memory": "1Gi"}}}
    return {
        "apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": {"name": "raycluster-sample"},
        "spec": {
            "rayVersion": "2.49.0",
            "headGroupSpec": {"rayStartParams": {"dashboard-host": "0.0.0.0"},
                              "template": {"spec": {"containers": [
                                  {"name": "ray-head", **container,
                                   "ports": [{"containerPort": 6379, "name": "gcs-server"},
                                             {"containerPort": 8265, "name": "dashboard"},
                                             {"containerPort": 10001, "name": "client"}]}]}}},
            "workerGroupSpecs": [{"groupName": "workers", "replicas": 1, "minReplicas": 1,
                                  "maxReplicas": 5, "rayStartParams": {},
                                  "template": {"spec": {"containers": [
                                      {"name": "ray-worker", **container}]}}}],
        },
    }


def examples(package: str, version: str) -> list[dict[str, Any]]:
    if package == "gpu-operator-certified":
        return [_cluster_policy(version)]
    if package == "nfd":
        return [_nfd(version)]
    if package == "kuberay-operator":
        return [_raycluster(version)]
    return []
