"""Inputs shared by the export's unit tests: the values the roles pass their modules."""

from __future__ import annotations

import copy

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan

NS = "llm"
HOST = "llm-llm.apps.example.com"
PLAN = build_plan({"preset": "llama-3-8b"},
                  {"nodes": 2, "gpus_per_node": 2, "gpu_memory_gib": 80},
                  layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 2},
                  topology="head_without_gpus")
NFD_EXAMPLE = {"apiVersion": "nfd.openshift.io/v1", "kind": "NodeFeatureDiscovery",
               "metadata": {"name": "nfd-instance", "namespace": "openshift-nfd"},
               "spec": {"operand": {"image": "nfd:4.18"}, "workerConfig": {"configData": "x"}}}
POLICY_EXAMPLE = {"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy",
                  "metadata": {"name": "gpu-cluster-policy"},
                  "spec": {"driver": {"enabled": True}, "dcgmExporter": {"enabled": True},
                           "toolkit": {"enabled": True}}}


def operators(**nfd_change) -> dict:
    nfd = {"package": "nfd", "namespace": "openshift-nfd", "catalog": "redhat-operators",
           "channel": "stable", "starting_csv": "nfd.4.18.0-202505061007",
           "instance": {"kind": "NodeFeatureDiscovery", "namespace": "openshift-nfd"},
           "examples": [copy.deepcopy(NFD_EXAMPLE)], **nfd_change}
    gpu = {"package": "gpu-operator-certified", "namespace": "nvidia-gpu-operator",
           "catalog": "certified-operators", "channel": "v25.3",
           "starting_csv": "gpu-operator-certified.v25.3.0",
           "instance": {"kind": "ClusterPolicy"}, "examples": [copy.deepcopy(POLICY_EXAMPLE)]}
    kuberay = {"package": "kuberay-operator", "namespace": "kuberay-operator",
               "catalog": "community-operators", "channel": "stable",
               "starting_csv": "kuberay-operator.v1.4.2"}
    return {"operators": [nfd, gpu, kuberay]}


def site_stages(**serving_change) -> dict:
    serving = {"namespace": NS, "name": "llm", "plan": copy.deepcopy(PLAN),
               "image": "registry.example.com/llmops/ray-vllm:0.1.0",
               "served_model_name": "tiny-llama", "model_dir": "tiny-llama",
               "model_pvc": "models", "route_host": HOST, **serving_change}
    return {"nodes": {"vms": ["gpu-0", "gpu-1"], "gpus_per_vm": 2,
                      "node_map": {"gpu-1": "worker-1"}},
            "operators": operators(),
            "storage": {"namespace": NS, "pvc": {"name": "models", "storage_class": "nfs-csi",
                                                 "size": "10Gi"}},
            "serving": serving}


@pytest.fixture
def site_values() -> dict:
    return site_stages()
