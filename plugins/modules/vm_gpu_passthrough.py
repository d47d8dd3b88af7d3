#!/usr/bin/python
# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Attach or detach passthrough GPUs to a VM (static or Dynamic DirectPath I/O)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_gpu_passthrough
short_description: Attach or detach NVIDIA GPUs to a VM with PCI passthrough
description:
  - Makes the VM have exactly O(gpu_count) GPUs matching the filter (O(state=present))
    or none (O(state=absent)), from the passthrough-active GPUs of the VM's host that no
    other VM uses.
  - O(mode=static) uses DirectPath I/O with the values of C(QueryConfigTarget) (PCI id,
    device id as the API expects it, vendor id, system id); O(mode=dynamic) uses Dynamic
    DirectPath I/O (C(allowedDevice)), which needs hardware version 17 or later.
  - Also locks the full memory reservation, turns 64-bit MMIO on and sizes it from the
    GPUs' memory (total rounded up to a power of two, doubled), and turns CPU hot-add
    off. Refuses BIOS firmware (large-BAR GPUs need EFI).
  - Devices can only change while the VM is off. A powered-on VM is power-cycled only
    with O(allow_power_cycle=true), otherwise the module fails saying so.
  - Before a VM is powered off, its OpenShift node is cordoned and drained (O(drain));
    pods are evicted through the Eviction API, so PodDisruptionBudgets are honoured;
    DaemonSet and mirror pods stay. After the power-on the module waits for the node to
    be Ready with a new boot, then uncordons it (a node that was cordoned before is left
    cordoned). A drain that cannot finish in O(drain_timeout) fails before the VM is
    touched, leaving the node cordoned.
  - With O(drain=true) (the default) a power cycle needs O(k8s_auth); without it the
    module refuses before any change. Set O(drain=false) for a VM that is no cluster node
    or that was drained already.
version_added: 0.1.0
author:
  - llmops.gpu_stack maintainers (@llmops)
requirements:
  - kubernetes >= 37.0.2 (only with O(k8s_auth))
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - llmops.gpu_stack.vsphere
options:
  vm_name:
    description: The VM.
    type: str
    required: true
  gpu_count:
    description: Number of GPUs the VM must have (1-16).
    type: int
    default: 1
  state:
    description: V(present) attaches, V(absent) detaches every matching GPU.
    type: str
    choices: [present, absent]
    default: present
  mode:
    description: Static DirectPath I/O or Dynamic DirectPath I/O.
    type: str
    choices: [static, dynamic]
    default: static
  gpu_models:
    description: GPUs by short model or device name substring.
    type: list
    elements: str
    default: []
  device_ids:
    description: GPUs by PCI device id (hex).
    type: list
    elements: str
    default: []
  allow_power_cycle:
    description: Power a running VM off and on again to change its devices.
    type: bool
    default: false
  power_on:
    description: Leave the VM powered on even if it was off.
    type: bool
    default: false
  mmio_size_gb:
    description: Override the computed C(pciPassthru.64bitMMIOSizeGB).
    type: int
  task_timeout:
    description: Seconds to wait for one vSphere task.
    type: int
    default: 600
  drain:
    description: Cordon and drain the VM's OpenShift node before a power cycle, and
      uncordon it once it is Ready again.
    type: bool
    default: true
  k8s_auth:
    description:
      - How to reach the OpenShift API for the drain - kubernetes.core's connection
        options (C(kubeconfig), C(context), C(host), C(api_key), C(validate_certs),
        C(ca_cert), ...), the same keys every module of the collection's
        C(llmops.gpu_stack.openshift) group takes.
      - An empty dictionary means the C(K8S_AUTH_*) environment, then C(~/.kube/config),
        then the in-cluster service account. Read only when a drain is needed.
    type: dict
  node_name:
    description: The VM's node, when it cannot be found from the VM (O(node_lookup)).
    type: str
  node_lookup:
    description:
      - How the VM's node is found. V(provider_id) - the node whose C(spec.providerID)
        is C(vsphere://) and the VM's BIOS UUID, as the vSphere cloud provider sets it;
        V(name) - the node named as the VM; V(auto) - the first, then the second.
    type: str
    choices: [auto, provider_id, name]
    default: auto
  drain_timeout:
    description: Seconds the drain may take (evictions a PodDisruptionBudget refuses are
      retried until then).
    type: int
    default: 600
  node_ready_timeout:
    description: Seconds to wait for the node to be Ready after the VM is powered on.
    type: int
    default: 900
attributes:
  check_mode:
    support: full
    details: Everything is read and validated; nothing is written.
  diff_mode:
    support: full
    details: Shows the state before and after.
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Two A100s for the worker, power-cycling it if it runs
  llmops.gpu_stack.vm_gpu_passthrough:
    vm_name: ocp-worker-0
    gpu_count: 2
    gpu_models: [a100-80g]
    allow_power_cycle: true
    k8s_auth:
      kubeconfig: "{{ ocp_kubeconfig }}"
"""

RETURN = r"""
vm:
  description: The VM name.
  returned: always
  type: str
host:
  description: The VM's host.
  returned: always
  type: str
gpus:
  description: The VM's matching passthrough devices after the change.
  returned: changed
  type: list
  elements: str
mmio_size_gb:
  description: The 64-bit MMIO size set (null for state=absent).
  returned: always
  type: int
power_cycled:
  description: Whether the VM was powered off and on.
  returned: always
  type: bool
node:
  description: The node drained around the power cycle (planned in check mode), null
    when there is no power cycle or O(drain=false).
  returned: always
  type: dict
  contains:
    node:
      description: The node's name.
      type: str
    cordoned_before:
      description: Whether the node was cordoned already (it is then left cordoned).
      type: bool
    evict:
      description: The pods evicted (C(namespace/name)).
      type: list
      elements: str
    kept:
      description: The pods left on the node (DaemonSet and mirror pods).
      type: list
      elements: str
progress:
  description: The drain's progress lines, also written to the module log.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import GpuStackError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import (
    HAS_K8S,
    K8S_IMPORT_ERROR,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.drain import (
    DrainRequest,
    node_drain,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere import vm_passthrough
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.client import (
    HAS_PYVMOMI,
    PYVMOMI_IMPORT_ERROR,
    VsphereClient,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.connection import (
    ConnectionParams,
    vsphere_argument_spec,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.gpu import GpuFilter


def _argument_spec() -> dict:
    spec = vsphere_argument_spec()
    spec.update(
        vm_name={"type": "str", "required": True},
        gpu_count={"type": "int", "default": 1},
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        mode={"type": "str", "choices": ["static", "dynamic"], "default": "static"},
        gpu_models={"type": "list", "elements": "str", "default": []},
        device_ids={"type": "list", "elements": "str", "default": []},
        allow_power_cycle={"type": "bool", "default": False},
        power_on={"type": "bool", "default": False},
        mmio_size_gb={"type": "int"},
        task_timeout={"type": "int", "default": 600},
        drain={"type": "bool", "default": True},
        k8s_auth={"type": "dict", "no_log": True},
        node_name={"type": "str"},
        node_lookup={"type": "str", "choices": ["auto", "provider_id", "name"],
                     "default": "auto"},
        drain_timeout={"type": "int", "default": 600},
        node_ready_timeout={"type": "int", "default": 900},
    )
    return spec


def _node_drain(p: dict, progress):
    """The node drain of the VM (None without k8s_auth: a power cycle is then refused
    unless drain is false)."""
    return node_drain(p["k8s_auth"], DrainRequest(
        node_name=p["node_name"], node_lookup=p["node_lookup"],
        drain_timeout=p["drain_timeout"], ready_timeout=p["node_ready_timeout"]),
        progress=progress)


def main():
    module = AnsibleModule(argument_spec=_argument_spec(), supports_check_mode=True)
    if not HAS_PYVMOMI:
        module.fail_json(msg=missing_required_lib("pyvmomi"), exception=PYVMOMI_IMPORT_ERROR)
    p = module.params
    if p["k8s_auth"] is not None and not HAS_K8S:
        module.fail_json(msg=missing_required_lib("kubernetes", reason="for k8s_auth (the drain)"),
                         exception=K8S_IMPORT_ERROR)
    lines = []
    try:
        node = _node_drain(p, lambda line: (lines.append(line), module.log(line)))
        request = vm_passthrough.VmRequest(
            vm=p["vm_name"], gpu_count=p["gpu_count"], state=p["state"], mode=p["mode"],
            gpu_filter=GpuFilter.build(p["gpu_models"], p["device_ids"]),
            allow_power_cycle=p["allow_power_cycle"], power_on=p["power_on"],
            mmio_size_gb=p["mmio_size_gb"], task_timeout=p["task_timeout"],
            check_mode=module.check_mode, drain=p["drain"], node=node,
        )
        with VsphereClient(ConnectionParams.from_params(p)) as client:
            result = vm_passthrough.run(client, request)
    except GpuStackError as exc:
        module.fail_json(**{"progress": lines, **exc.fail_kwargs()})
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(progress=lines, **result)


if __name__ == "__main__":
    main()
