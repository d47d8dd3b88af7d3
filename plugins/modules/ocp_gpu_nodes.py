#!/usr/bin/python
# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Label the OpenShift nodes of the GPU worker VMs; report and wait for their GPUs."""

from __future__ import annotations

DOCUMENTATION = r"""
module: ocp_gpu_nodes
short_description: Label OpenShift GPU nodes and wait for their allocatable GPUs
description:
  - Maps each GPU worker VM to its OpenShift node (same name, or O(node_map)), and
    labels those nodes C(nvidia.com/gpu.present=true) plus the collection's own labels
    C(gpu-stack.llmops.io/gpu-node), C(gpu-stack.llmops.io/vm) and
    C(gpu-stack.llmops.io/gpus-expected), with optional extra labels and taints.
  - Labels are written with server-side apply under the field manager
    C(llmops.gpu_stack) and strict field validation; labels other managers set are
    never touched. Nodes that carry our labels but are no longer GPU workers lose them
    (O(remove_stale)).
  - Reports per node the VM, the GPUs expected, whether NFD's PCI label
    C(feature.node.kubernetes.io/pci-10de.present) is there and the allocatable
    C(nvidia.com/gpu).
  - With O(wait_for=allocatable) it waits until every GPU node reports its expected
    count; on timeout the error names the nodes still short.
  - Every worker is checked against the cluster's nodes before the first write.
version_added: 0.1.0
author:
  - llmops.gpu_stack maintainers (@llmops)
requirements:
  - kubernetes >= 37.0.2
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kubernetes.core.k8s_auth_options
options:
  workers:
    description:
      - The GPU worker VMs and how many GPUs each has (from the ESXi stage).
      - For a uniform fleet, O(vms) with O(gpus_per_vm) says the same.
    type: list
    elements: dict
    suboptions:
      vm:
        description: The worker VM's name.
        type: str
        required: true
      gpus:
        description: GPUs passed through to that VM.
        type: int
        required: true
  vms:
    description: Worker VM names, each with O(gpus_per_vm) GPUs (instead of O(workers)).
    type: list
    elements: str
  gpus_per_vm:
    description: GPUs of every VM in O(vms).
    type: int
  node_map:
    description: VM name to node name, for nodes not named like their VM.
    type: dict
    default: {}
  labels:
    description: Extra labels for every GPU node.
    type: dict
    default: {}
  taints:
    description:
      - Taints for every GPU node (C(key), C(value), C(effect)), for example to keep
        other workloads off them. Pods must then tolerate them.
      - Each needs C(key) and an C(effect) of V(NoSchedule), V(PreferNoSchedule) or
        V(NoExecute); checked before any write.
    type: list
    elements: dict
    default: []
  label:
    description:
      - V(false) only reports, and waits per O(wait_for); no label is written. Use it
        to wait later in a play without repeating the labelling options.
    type: bool
    default: true
  remove_stale:
    description: Remove our labels from nodes that are not in O(workers) any more.
    type: bool
    default: true
  wait_for:
    description:
      - V(none) returns after labelling; V(allocatable) then waits until every GPU node
        reports its expected C(nvidia.com/gpu) (needs NFD and the GPU Operator).
    type: str
    choices: [none, allocatable]
    default: none
  wait_timeout:
    description: Seconds to wait for O(wait_for).
    type: int
    default: 600
attributes:
  check_mode:
    support: full
    details: Labels are sent as a server-side dry run; nothing changes and nothing is waited for.
  diff_mode:
    support: full
    details: Before and after of every node whose labels change.
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Label the GPU nodes of the reference site
  llmops.gpu_stack.ocp_gpu_nodes:
    kubeconfig: ~/.kube/config
    workers:
      - {vm: ocp-worker-0, gpus: 2}
      - {vm: ocp-worker-1, gpus: 2}
    labels:
      example.com/gpu-pool: llm

- name: Wait until the GPU Operator made every GPU allocatable
  llmops.gpu_stack.ocp_gpu_nodes:
    workers:
      - {vm: ocp-worker-0, gpus: 2}
      - {vm: ocp-worker-1, gpus: 2}
    node_map:
      ocp-worker-1: worker-1.ocp.example.com
    wait_for: allocatable
    wait_timeout: 900
"""

RETURN = r"""
nodes:
  description: One entry per GPU node.
  returned: always
  type: list
  elements: dict
  sample:
    - node: ocp-worker-0
      vm: ocp-worker-0
      gpus_expected: 2
      nfd_pci_label: true
      allocatable_gpus: 2
      labels: {nvidia.com/gpu.present: "true"}
changed_nodes:
  description: Nodes whose labels changed (or would change in check mode).
  returned: always
  type: list
  elements: str
wait:
  description: How the wait for allocatable GPUs ended (skipped in check mode).
  returned: when O(wait_for=allocatable)
  type: str
  sample: 8 of 8 GPU nodes allocatable
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import GpuStackError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import gpu_nodes_runner
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import (
    HAS_K8S,
    K8S_IMPORT_ERROR,
    K8sClient,
    k8s_argument_spec,
)


def _argument_spec() -> dict:
    spec = k8s_argument_spec()
    spec.update(
        workers={"type": "list", "elements": "dict", "options": {
            "vm": {"type": "str", "required": True}, "gpus": {"type": "int", "required": True}}},
        vms={"type": "list", "elements": "str"},
        gpus_per_vm={"type": "int"},
        node_map={"type": "dict", "default": {}},
        labels={"type": "dict", "default": {}},
        taints={"type": "list", "elements": "dict", "default": []},
        label={"type": "bool", "default": True},
        remove_stale={"type": "bool", "default": True},
        wait_for={"type": "str", "choices": ["none", "allocatable"], "default": "none"},
        wait_timeout={"type": "int", "default": 600},
    )
    return spec


def _request(module) -> gpu_nodes_runner.Request:
    p = module.params
    workers = p["workers"] or [{"vm": vm, "gpus": p["gpus_per_vm"]} for vm in p["vms"]]
    return gpu_nodes_runner.Request(
        workers=workers, node_map=p["node_map"], labels=p["labels"], taints=p["taints"],
        label=p["label"], remove_stale=p["remove_stale"], wait_for=p["wait_for"],
        wait_timeout=p["wait_timeout"], check_mode=module.check_mode,
        progress=lambda status, elapsed: module.log(f"+{elapsed:.0f}s {status.progress}"))


def main():
    module = AnsibleModule(argument_spec=_argument_spec(), supports_check_mode=True,
                           required_one_of=[("workers", "vms")],
                           mutually_exclusive=[("workers", "vms")],
                           required_together=[("vms", "gpus_per_vm")])
    if not HAS_K8S:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=K8S_IMPORT_ERROR)
    try:
        result = gpu_nodes_runner.run(K8sClient.from_params(module.params), _request(module))
    except GpuStackError as exc:
        module.fail_json(**exc.fail_kwargs())
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
