#!/usr/bin/python
# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Bring up (or remove) the Ray + vLLM serving stack of a serving plan on KubeRay."""

from __future__ import annotations

DOCUMENTATION = r"""
module: ray_vllm_cluster
short_description: Ray + vLLM on KubeRay from a serving plan, behind a Service and a Route
description:
  - From a plan of M(llmops.gpu_stack.serving_plan), applies one RayCluster per replica
    (C(<name>-0), C(<name>-1), ...; replicas are independent vLLM servers, so one failing
    replica never stops the others), a Service carrying only the API port and selecting
    every replica's head, a TLS edge Route with a timeout fit for streaming,
    NetworkPolicies, a ServiceAccount and the API-key Secret.
  - Ray stays private. One NetworkPolicy per RayCluster (C(<name>-<i>-peers)) admits,
    on every port, only pods of that same RayCluster (KubeRay's C(ray.io/cluster)
    label); C(<name>-ray) lets anyone reach the heads' API port and the KubeRay
    operator (O(kuberay_operator_namespace), O(kuberay_operator_pod_labels)) their Ray
    client and dashboard ports, as KubeRay's own policy does. Ray's metrics port gets
    no rule; Prometheus scrapes vLLM's C(/metrics) on the API port with the Secret's
    C(metrics-key). The Ray dashboard (its Jobs API runs code without authentication)
    listens on the pod's loopback only (C(kubectl port-forward) reaches it).
  - The API-key Secret holds C(api-key) and C(metrics-key) (generated once, kept across
    reruns); the head reads both as files of the Secret's volume, never from its
    environment or arguments.
  - Every pod runs the image's C(gpu-stack-launch) (KubeRay's
    C(ray.io/overwrite-container-cmd)). The head starts Ray, waits until the cluster
    holds TP x PP GPUs (logging how many joined), checks the model directory and runs
    vLLM's OpenAI server; workers join Ray. Pods run as non-root without privilege
    escalation, get C(/dev/shm) as a memory emptyDir and the model volume read-only.
  - Refuses before any write a layout needing more GPUs than the selected nodes report
    allocatable (with the numbers), a missing or non-shared model volume, an image
    without a tag or digest and a served model name with invalid characters.
  - Waits with progress (pods scheduled, workers running, vLLM healthy, Route admitted)
    and returns the endpoint URL. A head that exits with one of the launcher's
    unrecoverable codes (bad options, model not ready, GPUs missing) ends the wait at once
    with its last log lines.
  - With O(backend=deployment), a model whose replica fits one node is served without
    Ray - one Deployment C(<name>) with the plan's replicas, each pod one replica running
    C(gpu-stack-launch serve) (the same checks of options, API key file and model marker,
    then vLLM's multiprocessing executor with TP x PP GPUs inside the pod), readiness on
    C(/health), no Ray head. The same Service, TLS Route, API-key Secret and hand-over
    ConfigMap; one NetworkPolicy C(<name>-api) admits the API port alone. A new pod
    template (a new API key's digest, a new image) is rolled by the Deployment
    controller one pod at a time (no spare GPU needed), waited for and reported in
    RV(rolled). A plan whose replica spans nodes is refused for this backend.
  - Each backend deletes the others' objects of the same O(name), so switching a
    model's backend and rerunning leaves only the new backend's objects.
  - Records what a later stage needs in a ConfigMap C(<name>-endpoint) beside the serving
    objects (keys C(endpoint), C(api_key_secret), C(served_model_name), C(namespace),
    C(service), C(route), C(backend), C(clusters) (the RayClusters, empty for
    C(deployment)), C(deployment) (its name, empty for C(ray)), C(tensor_parallel_size),
    C(pipeline_parallel_size), C(replicas), and with V(kserve) C(inference_services)),
    written last through the same server-side apply and shown in the diff, so the
    validate stage finds the endpoint in a later run.
  - Changing the pod template of an existing RayCluster is applied to the RayCluster
    object, but KubeRay does not replace running pods for it. So the module rolls the
    serving pods itself, head and workers, one RayCluster at a time, each waited for until
    Ready when O(wait) is on, when a live pod runs another image than O(image) (compared
    per container of the head's and each worker group's template, as after an upgrade
    or the fix for pods stuck in ImagePullBackOff) or the head holds another API key (see
    O(llm_api_key)). Check mode reports the roll (RV(rolled), and the diff as
    C(Pods/<cluster>) with the images and the key's SHA-256, never the key) and deletes
    nothing; a rerun with nothing changed rolls nothing. Other template changes (resources,
    environment, arguments) reach the pods only when they are replaced; delete the pods
    (or run O(state=absent) first) to roll them.
version_added: 0.1.0
author:
  - llmops.gpu_stack maintainers (@llmops)
requirements:
  - kubernetes >= 37.0.2
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kubernetes.core.k8s_auth_options
options:
  state:
    description: V(present) applies and waits; V(absent) removes what V(present) wrote.
    type: str
    choices: [present, absent]
    default: present
  namespace:
    description: Namespace of the serving stack (created if missing); the model PVC lives there.
    type: str
    required: true
  name:
    description: Name of the Service and Route, prefix of the RayClusters and NetworkPolicies.
    type: str
    default: llm
  plan:
    description:
      - The plan (the C(plan) result of M(llmops.gpu_stack.serving_plan)). Required with
        O(state=present).
    type: dict
  backend:
    description:
      - How the model is served. V(ray) - one RayCluster per replica (a replica may span
        nodes). V(deployment) - one Deployment of plain vLLM pods, one pod per replica, no
        Ray (the replica must fit one node; the C(backend) of a M(llmops.gpu_stack.serving_plan)
        C(plans) entry). V(kserve) - KServe's multi-node serving (Red Hat OpenShift AI or
        Open Data Hub, RawDeployment mode) - one ServingRuntime C(<name>) running the
        launcher as KServe's head and worker containers, and one InferenceService
        C(<name>-<i>) per replica whose C(workerSpec) carries the plan's pipeline and
        tensor parallel sizes (PP pods of TP GPUs; a plan whose TP spans pods is refused),
        the weights from C(pvc://<model_pvc>/<model_dir>). Refused before any write when
        the cluster serves no InferenceService.
    type: str
    choices: [ray, deployment, kserve]
    default: ray
  kserve_autoscaler_class:
    description:
      - With O(backend=kserve), the InferenceServices' C(serving.kserve.io/autoscalerClass).
        Multi-node InferenceServices take no autoscaler - V(none) for KServe 0.15.1 and
        later (Red Hat OpenShift AI 2.25 and later), V(external) for Red Hat OpenShift AI
        2.16 to 2.22, whose admission webhook asks for it.
    type: str
    choices: [none, external]
    default: none
  image:
    description: The Ray + vLLM image (C(images/ray-vllm/)), with a tag or a digest.
    type: str
  served_model_name:
    description: The model name clients ask for (letters, digits, C(. _ / -)).
    type: str
  model_pvc:
    description: The ReadWriteMany PVC holding the weights (see M(llmops.gpu_stack.model_stage)).
    type: str
    default: models
  model_dir:
    description: Directory of the model on the volume (the stager's destination).
    type: str
  llm_api_key:
    description:
      - The API key clients must send. Written to the Secret O(api_key_secret). When
        omitted, an existing Secret is kept and a missing one gets a random key (read it
        from the Secret).
      - A key other than the one the running heads were started with (their pods carry
        its SHA-256, never the key, as the annotation C(gpu-stack.llmops.io/api-key-sha256))
        rolls the serving pods, head and workers, one RayCluster at a time, each waited for
        until Ready when O(wait) is on, so with several replicas the others keep serving;
        the old key stops working. Check mode reports the roll (RV(rolled), the diff) and
        deletes nothing; a rerun with the same key rolls nothing.
      - Not O(api_key), which is kubernetes.core's bearer token for the API server (both
        arrive through C(module_defaults) of the action group).
    type: str
  api_key_secret:
    description:
      - Secret holding the API key (key C(api-key)); empty for an open API. Default C(<name>-api-
        key).
    type: str
  service_account:
    description: ServiceAccount of the Ray pods.
    type: str
    default: ray-vllm
  node_selector:
    description:
      - Labels of the GPU nodes (set by M(llmops.gpu_stack.ocp_gpu_nodes)); GPU pods are pinned to
        them.
    type: dict
    default: {gpu-stack.llmops.io/gpu-node: "true"}
  tolerations:
    description:
      - Tolerations of the GPU pods (for GPU nodes tainted by M(llmops.gpu_stack.ocp_gpu_nodes)).
    type: list
    elements: dict
    default: []
  head_resources:
    description: CPU and memory requests of the head (C(cpu), C(memory); memory is also the limit).
    type: dict
    default: {cpu: "4", memory: 16Gi}
  worker_resources:
    description:
      - CPU and memory requests of each worker (C(cpu), C(memory)); GPUs come from the plan.
      - With O(backend=deployment), the requests of each vLLM pod.
    type: dict
    default: {cpu: "8", memory: 64Gi}
  shm_size:
    description: Size limit of the memory-backed C(/dev/shm).
    type: str
    default: 16Gi
  startup_checks:
    description: Failed C(/health) checks (every 10 s) allowed while vLLM loads the weights.
    type: int
    default: 180
  route_host:
    description:
      - Host of the Route (default the cluster's generated C(<name>-<namespace>.<apps domain>)).
    type: str
  route_timeout:
    description:
      - Router timeout (C(haproxy.router.openshift.io/timeout)); long enough for streamed answers.
    type: str
    default: 600s
  ray_version:
    description: Ray version of the image (the RayCluster's C(rayVersion)).
    type: str
    default: 2.60.0
  extra_vllm_args:
    description: More arguments for vLLM, after the plan's.
    type: list
    elements: str
    default: []
  env:
    description: Extra environment variables of every Ray container.
    type: dict
    default: {}
  head_ray_params:
    description: Extra C(rayStartParams) of the head (e.g. C(object-store-memory)).
    type: dict
    default: {}
  worker_ray_params:
    description: Extra C(rayStartParams) of the workers.
    type: dict
    default: {}
  kuberay_operator_namespace:
    description:
      - Namespace of the KubeRay operator, admitted to the heads' Ray client and dashboard
        ports (matched by the namespace's C(kubernetes.io/metadata.name) label).
      - An empty string admits no operator.
    type: str
    default: kuberay-operator
  kuberay_operator_pod_labels:
    description:
      - Labels of the KubeRay operator's pods in O(kuberay_operator_namespace).
    type: dict
    default:
      app.kubernetes.io/component: kuberay-operator
  wait:
    description: Wait until every replica serves and the Route is admitted.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait (weights loading included).
    type: int
    default: 1800
attributes:
  check_mode:
    support: full
    details:
      - Writes are server-side dry runs; nothing is waited for. The API key Secret is
        reported as a change when it would be written.
      - GPUs or a model volume missing at preflight are warnings in check mode (the
        earlier stages, in check mode too, did not create them); input errors still fail.
  diff_mode:
    support: full
    details:
      - Before and after of every object that changes, the Secret excluded.
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Plan the layout
  llmops.gpu_stack.serving_plan:
    model: {preset: llama-3-70b}
    hardware: {nodes: 8, gpus_per_node: 2, gpu_memory_gib: 40}
  register: plan

- name: Serve it
  llmops.gpu_stack.ray_vllm_cluster:
    namespace: llm
    plan: "{{ plan.plan }}"
    image: registry.example.com/llmops/ray-vllm:0.1.0
    served_model_name: llama-3-70b
    model_pvc: models
    model_dir: llama-3-70b
    llm_api_key: "{{ vault_llm_api_key }}"
  register: serving

- name: Show the endpoint
  ansible.builtin.debug:
    msg: "{{ serving.endpoint }}/v1"
"""

RETURN = r"""
endpoint:
  description: The API's base URL through the Route (add C(/v1) for the OpenAI routes).
  returned: when the Route is admitted
  type: str
  sample: https://llm-llm.apps.ocp.example.com
clusters:
  description: Names of the RayClusters, one per replica (empty with O(backend=deployment) or
    O(backend=kserve)).
  returned: state=present
  type: list
  elements: str
backend:
  description: The backend that serves the model (V(ray), V(deployment) or V(kserve)).
  returned: state=present
  type: str
  sample: deployment
api_key_secret:
  description: The Secret holding the API key (key C(api-key)); never the key itself.
  returned: always
  type: str
gpus_needed:
  description: GPUs the plan needs over all replicas.
  returned: state=present
  type: int
nodes:
  description: Allocatable GPUs of the selected nodes at preflight (C(node=count)).
  returned: state=present
  type: list
  elements: str
status:
  description: The last state of each replica (pods scheduled, workers running, vLLM health).
  returned: when waited
  type: list
  elements: str
head_args:
  description:
    - Arguments of the heads' C(gpu-stack-launch) (the production command line); with
      O(backend=deployment), of the vLLM pods' C(gpu-stack-launch serve).
  returned: state=present
  type: list
  elements: str
progress:
  description: Progress lines written during the wait.
  returned: when waited
  type: list
  elements: str
rolled:
  description:
    - The RayClusters whose pods were (in check mode, would be) replaced because their
      heads ran with another API key or a live pod ran another image; empty when none.
    - With O(backend=deployment), the Deployment whose pod template changed (its
      controller replaces the pods).
    - With O(backend=kserve), the InferenceServices whose predictor or ServingRuntime
      changed (KServe's controller replaces their pods).
  returned: state=present
  type: list
  elements: str
  sample: [llm-0]
handover:
  description: Name of the ConfigMap (in O(namespace)) recording the stage's outputs.
  returned: state=present
  type: str
  sample: llm-endpoint
"""

from dataclasses import fields

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import GpuStackError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import (
    HAS_K8S,
    K8S_IMPORT_ERROR,
    K8sClient,
    k8s_argument_spec,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving_runner import (
    Request,
    run,
)


def _argument_spec() -> dict:
    spec = k8s_argument_spec()
    spec.update(
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        namespace={"type": "str", "required": True},
        name={"type": "str", "default": "llm"},
        plan={"type": "dict"},
        backend={"type": "str", "choices": ["ray", "deployment", "kserve"], "default": "ray"},
        kserve_autoscaler_class={"type": "str", "choices": ["none", "external"],
                                 "default": "none"},
        image={"type": "str"},
        served_model_name={"type": "str"},
        model_pvc={"type": "str", "default": "models"},
        model_dir={"type": "str"},
        llm_api_key={"type": "str", "no_log": True},
        api_key_secret={"type": "str", "no_log": False},
        service_account={"type": "str", "default": "ray-vllm"},
        node_selector={"type": "dict", "default": {"gpu-stack.llmops.io/gpu-node": "true"}},
        tolerations={"type": "list", "elements": "dict", "default": []},
        head_resources={"type": "dict", "default": {"cpu": "4", "memory": "16Gi"}},
        worker_resources={"type": "dict", "default": {"cpu": "8", "memory": "64Gi"}},
        shm_size={"type": "str", "default": "16Gi"},
        startup_checks={"type": "int", "default": 180},
        route_host={"type": "str"},
        route_timeout={"type": "str", "default": "600s"},
        ray_version={"type": "str", "default": "2.60.0"},
        extra_vllm_args={"type": "list", "elements": "str", "default": []},
        env={"type": "dict", "default": {}},
        head_ray_params={"type": "dict", "default": {}},
        worker_ray_params={"type": "dict", "default": {}},
        kuberay_operator_namespace={"type": "str", "default": "kuberay-operator"},
        kuberay_operator_pod_labels={"type": "dict", "default": {
            "app.kubernetes.io/component": "kuberay-operator"}},
        wait={"type": "bool", "default": True},
        wait_timeout={"type": "int", "default": 1800},
    )
    return spec


_REQUEST_KEYS = frozenset(f.name for f in fields(Request))


def main():
    module = AnsibleModule(argument_spec=_argument_spec(), supports_check_mode=True)
    if not HAS_K8S:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=K8S_IMPORT_ERROR)
    params = {k: v for k, v in module.params.items() if k in _REQUEST_KEYS}
    request = Request(**params, check_mode=module.check_mode, diff=module._diff)
    out: dict = {}
    try:
        client = K8sClient.from_params(module.params)
        run(client, request, progress=module.log, out=out)
    except GpuStackError as exc:
        out.pop("warnings", None)
        module.fail_json(**{**out, **exc.fail_kwargs()})
    for warning in out.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
