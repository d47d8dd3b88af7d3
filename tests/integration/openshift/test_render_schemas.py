"""The rendered serving objects against the lab's real upstream CRD schemas (KubeRay
through OLM, OpenShift Route, KServe's InferenceService and ServingRuntime) with strict
field validation, as a server-side dry run."""

from __future__ import annotations

import copy

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import K8sClient
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.olm import (
    OlmOperator,
    OperatorSpec,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import render_kserve
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.render import manifests

from .k8s_helpers import custom, register_crds

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SITE = {"nodes": 8, "gpus_per_node": 2, "gpu_memory_gib": 40}
CFG = {"name": "llm", "namespace": "serving", "image": "registry.example.com/llmops/ray-vllm:0.1.0",
       "served_model_name": "llama-3-70b", "model_dir": "llama-3-70b", "pvc": "models",
       "api_key_secret": "llm-api-key", "service_account": "ray-vllm", "ray_version": "2.60.0",
       "shm_size": "16Gi", "startup_checks": 180, "route_timeout": "600s",
       "node_selector": {"nvidia.com/gpu.present": "true"},
       "head_resources": {"cpu": "4", "memory": "16Gi"},
       "worker_resources": {"cpu": "8", "memory": "64Gi"}}


@pytest.fixture(scope="module")
def client(k8s_lab_factory):
    lab = k8s_lab_factory()
    k8s = K8sClient.from_params({"kubeconfig": lab.kubeconfig, "context": "lab-admin"})
    olm = OlmOperator(k8s)
    spec = OperatorSpec("kuberay-operator", "kuberay-operator", "community-operators")
    resolved = olm.resolve(spec)
    olm.ensure(spec, resolved, olm.operator_group(spec), check_mode=False)
    olm.wait_installed(spec, resolved.csv, timeout=120)
    k8s.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "serving"}},
              check_mode=False)
    k8s.lab = lab
    return k8s


def test_every_object_passes_strict_validation(client):
    objs = manifests(build_plan({"preset": "llama-3-70b"}, SITE), CFG)
    for obj in objs:
        result = client.apply(obj, check_mode=True)
        assert result.changed and result.after["metadata"]["name"] == obj["metadata"]["name"]
    # a dry run: nothing was created
    assert custom(client.lab, "ray.io/v1", "rayclusters", "serving") == []
    assert custom(client.lab, "route.openshift.io/v1", "routes", "serving") == []
    assert client.list("v1", "Service", "serving") == []


def test_a_misspelt_field_is_refused_by_the_schema(client):
    rc = next(o for o in manifests(build_plan({"preset": "llama-3-8b"}, SITE), CFG)
              if o["kind"] == "RayCluster")
    bad = copy.deepcopy(rc)
    bad["spec"]["workerGroupSpec"] = bad["spec"].pop("workerGroupSpecs")
    with pytest.raises(InvalidInputError, match="workerGroupSpec"):
        client.apply(bad, check_mode=True)
    wrong_type = copy.deepcopy(rc)
    wrong_type["spec"]["workerGroupSpecs"][0]["replicas"] = "one"
    with pytest.raises(InvalidInputError):
        client.apply(wrong_type, check_mode=True)


KSERVE_CRDS = ("inferenceservices.serving.kserve.io", "servingruntimes.serving.kserve.io")


def test_the_kserve_backends_objects_pass_strict_validation(client):
    """Issue 19's seed case (Llama 3 70B, the planner's TP 2 x PP 2 as KServe's
    workerSpec sizes) against KServe's upstream CRDs, registered from their files."""
    if not register_crds(client.lab, *KSERVE_CRDS):
        pytest.skip("upstream KServe CRDs not available (GPU_LAB_CRDS)")
    objs = render_kserve.manifests(build_plan({"preset": "llama-3-70b"}, SITE), CFG)
    assert {o["kind"] for o in objs} >= {"ServingRuntime", "InferenceService"}
    for obj in objs:
        result = client.apply(obj, check_mode=True)
        assert result.changed and result.after["metadata"]["name"] == obj["metadata"]["name"]
        if obj["kind"] == "InferenceService":  # the server kept what KServe reads
            assert result.after["spec"]["predictor"]["workerSpec"] == {
                "pipelineParallelSize": 2, "tensorParallelSize": 2}
    assert custom(client.lab, "serving.kserve.io/v1beta1", "inferenceservices", "serving") == []
    assert custom(client.lab, "serving.kserve.io/v1alpha1", "servingruntimes", "serving") == []
    runtime = next(o for o in objs if o["kind"] == "ServingRuntime")
    bad = copy.deepcopy(runtime)
    bad["spec"]["workerSpec"]["tensorParallelSizes"] = 2
    with pytest.raises(InvalidInputError, match="tensorParallelSizes"):
        client.apply(bad, check_mode=True)
