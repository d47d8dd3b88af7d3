#!/usr/bin/python
# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""One LiteLLM gateway in front of every served model: routes by the request's model."""

from __future__ import annotations

DOCUMENTATION = r"""
module: llm_gateway
short_description: LiteLLM's proxy in front of the served models, routing by model name
description:
  - Deploys LiteLLM's proxy (the C(llm-gateway) image, C(images/gateway/)) as a Deployment
    with a Service, a TLS edge Route and a NetworkPolicy, in the namespace of the served
    models. Clients call one C(/v1) for every model; the request's C(model) picks the
    backend, and C(/v1/models) lists every model.
  - The configuration is generated from the serving stage's hand-over ConfigMaps
    (C(<name>-endpoint), written by M(llmops.gpu_stack.ray_vllm_cluster)) found in the
    namespace, all of them or those named in O(models). Every replica Service of a model
    becomes one LiteLLM deployment under the model's served name (a RayCluster's head
    Service C(<cluster>-head-svc); a model served by one Deployment has its one Service),
    so LiteLLM balances over the replicas and retries a failed request
    (O(num_retries)), leaving a failing replica out for O(cooldown_time) seconds.
    Streaming is passed through.
  - No key is written in clear. The config (ConfigMap C(<name>-config)) names each
    backend URL and API key as an environment reference; the pod reads each model's API
    key from its Secret (C(api-key)) and the master key from the Secret
    O(master_key_secret) (C(master-key)), generated once (C(sk-...)) and kept across
    reruns when O(master_key) is not given. Every path except LiteLLM's health checks
    needs the master key.
  - The SHA-256 of the config, the backend URLs and the keys is the pod annotation
    C(gpu-stack.llmops.io/config-sha256), so a model added or removed, or a rotated key,
    rolls the gateway's pods (one at a time, never below O(replicas) ready pods).
  - Refuses before any write a named model without a hand-over, a backend whose API-key
    Secret is missing, two models answering to the same name, an image without a tag or
    digest and a master key not in LiteLLM's C(sk-) format.
  - Records the endpoint, Service, port, master-key Secret and model names in the
    ConfigMap C(<name>-endpoint) (label C(app.kubernetes.io/component=gateway-handover))
    for the validate stage.
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
    description: Namespace of the served models and of the gateway.
    type: str
    required: true
  name:
    description:
      - Name of the Deployment, Service, Route and NetworkPolicy; prefix of the ConfigMaps
        and the Secret.
    type: str
    default: llm-gateway
  image:
    description:
      - The gateway image (C(images/gateway/)), with a tag or a digest. Required with
        O(state=present).
    type: str
  models:
    description:
      - Names of the serving releases (the O(llmops.gpu_stack.ray_vllm_cluster#module:name)
        of each) the gateway routes to. Default every served model of the namespace.
    type: list
    elements: str
  master_key:
    description:
      - The gateway's master key (C(sk-) and at least 17 more characters). Written to
        O(master_key_secret). When omitted, an existing Secret is kept and a missing one
        gets a random key.
    type: str
  master_key_secret:
    description: Secret holding the master key (key C(master-key)). Default C(<name>-master-key).
    type: str
  replicas:
    description: Gateway pods.
    type: int
    default: 1
  workers:
    description: LiteLLM worker processes per pod.
    type: int
    default: 1
  resources:
    description: The gateway container's resources (C(requests), C(limits)).
    type: dict
    default: {requests: {cpu: 500m, memory: 1Gi}, limits: {memory: 2Gi}}
  node_selector:
    description: Node labels for the gateway's pods (no GPU needed).
    type: dict
    default: {}
  env:
    description:
      - Extra environment of the gateway container (plain values; LiteLLM's own
        settings). Names starting with C(GATEWAY_) are the gateway's own and refused.
    type: dict
    default: {}
  route_host:
    description: Host of the Route (default the cluster's generated host).
    type: str
  route_timeout:
    description:
      - Router timeout (C(haproxy.router.openshift.io/timeout)); long enough for streamed
        answers.
    type: str
    default: 600s
  num_retries:
    description:
      - Retries of a failed request (LiteLLM's router; on another replica when one is healthy).
    type: int
    default: 2
  request_timeout:
    description: Seconds a request to a backend may take, streamed or not.
    type: int
    default: 600
  allowed_fails:
    description: Failures of a replica within a minute before it is left out.
    type: int
    default: 3
  cooldown_time:
    description: Seconds a failing replica is left out.
    type: int
    default: 30
  wait:
    description: Wait until the pods of the current config are ready and the Route admitted.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait.
    type: int
    default: 600
attributes:
  check_mode:
    support: full
    details:
      - Writes are server-side dry runs; nothing is waited for. A master key to write is
        reported as a change. No served model yet is a warning (the serving stage, in
        check mode too, created none).
  diff_mode:
    support: full
    details:
      - Before and after of every object that changes, the Secret excluded.
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: One gateway in front of every model served in the namespace
  llmops.gpu_stack.llm_gateway:
    namespace: llm
    image: registry.example.com/llmops/llm-gateway:0.1.0
  register: gateway

- name: Show how clients reach it
  ansible.builtin.debug:
    msg: "base_url {{ gateway.endpoint }}/v1, key in Secret {{ gateway.master_key_secret }}"

- name: Only two of the models, three retries, a given master key
  llmops.gpu_stack.llm_gateway:
    namespace: llm
    image: registry.example.com/llmops/llm-gateway:0.1.0
    models: [llama-3-70b, llama-3-8b]
    num_retries: 3
    master_key: "{{ vault_gateway_master_key }}"
"""

RETURN = r"""
endpoint:
  description: The gateway's base URL through the Route (add C(/v1) for the OpenAI routes).
  returned: when the Route is admitted
  type: str
  sample: https://llm-gateway-llm.apps.ocp.example.com
service_url:
  description: The gateway's in-cluster URL.
  returned: state=present
  type: str
  sample: http://llm-gateway.llm.svc:4000
master_key_secret:
  description: The Secret holding the master key (key C(master-key)); never the key itself.
  returned: always
  type: str
models:
  description: The model names the gateway routes (C(/v1/models) lists them).
  returned: state=present
  type: list
  elements: str
deployments:
  description:
    - Per model name, the LiteLLM deployments (C(<release>/<Service>)), one per replica
      Service.
  returned: state=present
  type: dict
config_sha256:
  description: SHA-256 of the config, the backend URLs and the keys (the pods' annotation).
  returned: state=present
  type: str
handover:
  description: Name of the ConfigMap (in O(namespace)) recording the gateway's outputs.
  returned: state=present
  type: str
  sample: llm-gateway-endpoint
progress:
  description: Progress lines written during the wait.
  returned: always
  type: list
  elements: str
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
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.gateway_runner import (
    Request,
    run,
)


def _argument_spec() -> dict:
    spec = k8s_argument_spec()
    spec.update(
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        namespace={"type": "str", "required": True},
        name={"type": "str", "default": "llm-gateway"},
        image={"type": "str"},
        models={"type": "list", "elements": "str"},
        master_key={"type": "str", "no_log": True},
        master_key_secret={"type": "str", "no_log": False},
        replicas={"type": "int", "default": 1},
        workers={"type": "int", "default": 1},
        resources={"type": "dict", "default": {"requests": {"cpu": "500m", "memory": "1Gi"},
                                               "limits": {"memory": "2Gi"}}},
        node_selector={"type": "dict", "default": {}},
        env={"type": "dict", "default": {}},
        route_host={"type": "str"},
        route_timeout={"type": "str", "default": "600s"},
        num_retries={"type": "int", "default": 2},
        request_timeout={"type": "int", "default": 600},
        allowed_fails={"type": "int", "default": 3},
        cooldown_time={"type": "int", "default": 30},
        wait={"type": "bool", "default": True},
        wait_timeout={"type": "int", "default": 600},
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
