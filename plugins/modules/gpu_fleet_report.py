#!/usr/bin/python
# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Report the GPU fleet: ESXi hosts, worker VMs, OpenShift nodes and their GPUs."""

from __future__ import annotations

DOCUMENTATION = r"""
module: gpu_fleet_report
short_description: Report ESXi hosts, worker VMs, OpenShift nodes and their GPUs
description:
  - One row per GPU worker with the ESXi host, the worker VM, its OpenShift node, the
    host's NVIDIA GPUs (model, count, memory), their passthrough state (capable,
    enabled, active, waiting for a reboot), the passthrough devices the VM is configured
    with and the C(nvidia.com/gpu) its node reports allocatable.
  - Names every problem, in particular a VM configured with fewer passthrough GPUs than
    expected and a node with fewer (or no) allocatable GPUs than expected.
  - Returns the hardware the planner may assume (P(llmops.gpu_stack.serving_plan#module)
    O(llmops.gpu_stack.serving_plan#module:hardware)), with the GPU model and memory from
    vSphere and the GPU nodes and GPUs per node from the allocatable GPUs of the cluster.
  - Without O(vcenter), the report is built from the cluster alone; GPU model and memory
    then come from the labels GPU Feature Discovery sets (C(nvidia.com/gpu.product),
    C(nvidia.com/gpu.memory)).
  - Only reads; writes nothing on vSphere or the cluster.
version_added: 0.1.0
author:
  - llmops.gpu_stack maintainers (@llmops)
requirements:
  - kubernetes >= 37.0.2
  - pyvmomi >= 9.1.1.0 (only with O(vcenter))
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kubernetes.core.k8s_auth_options
options:
  vcenter:
    description:
      - How to reach vCenter; omit to report from the cluster alone.
      - Each connection option left out is read from the environment as the vSphere
        modules read it (E(VMWARE_HOST), E(VMWARE_USER), E(VMWARE_PASSWORD),
        E(VMWARE_PORT), E(VMWARE_VALIDATE_CERTS), E(VMWARE_CA_PATH)), which is how AWX /
        Automation Controller's VMware vCenter credential injects them; give at least an
        empty dict to read vSphere that way. A host, user or password found nowhere is
        an error before any connection.
    type: dict
    suboptions:
      hostname:
        description: The vCenter server.
        type: str
      port:
        description: Its HTTPS port.
        type: int
        default: 443
      username:
        description: The vCenter user.
        type: str
        aliases: [user]
      password:
        description: Its password.
        type: str
        aliases: [pass, pwd]
      validate_certs:
        description: Verify vCenter's TLS certificate.
        type: bool
        default: true
      ca_path:
        description: CA bundle to verify vCenter's certificate with.
        type: path
      request_timeout:
        description: Seconds to wait for a vCenter answer.
        type: int
        default: 60
  workers:
    description:
      - The GPU workers to report, each an ESXi host and its worker VM (from the ESXi
        stage's inventory). The node is the one labelled C(gpu-stack.llmops.io/vm=<vm>),
        else the node named like the VM, unless C(node) is given.
      - Empty reports every VM configured with passthrough GPUs or named by a GPU node,
        and every host with GPUs but no such VM.
    type: list
    elements: dict
    default: []
    suboptions:
      host:
        description: The ESXi host.
        type: str
      vm:
        description: The worker VM on that host.
        type: str
      node:
        description: The worker's OpenShift node, when not found as described above.
        type: str
      gpus:
        description: GPUs the worker should have; default O(gpus_per_vm).
        type: int
  gpus_per_vm:
    description:
      - GPUs each worker should have. V(0) takes the count the node records in its
        C(gpu-stack.llmops.io/gpus-expected) label (set by
        P(llmops.gpu_stack.ocp_gpu_nodes#module)); without it only a node with no
        allocatable GPU is a problem.
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    details: The module only reads; it reports C(changed=false).
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Report the fleet
  llmops.gpu_stack.gpu_fleet_report:
    kubeconfig: ~/.kube/config
    vcenter:
      hostname: vcenter.example.com
      username: "{{ vcenter_user }}"
      password: "{{ vcenter_password }}"
    workers:
      - {host: esxi-0, vm: ocp-worker-0}
      - {host: esxi-1, vm: ocp-worker-1}
    gpus_per_vm: 2
  register: fleet

- name: Show it
  ansible.builtin.debug:
    msg: "{{ fleet.table }}"
"""

RETURN = r"""
fleet:
  description:
    - One entry per worker, sorted by host. C(passthrough) counts the host's GPUs per
      state; C(vm_gpus) is the number of passthrough devices the VM is configured
      with; C(node_allocatable_gpus) the node's allocatable C(nvidia.com/gpu).
  returned: always
  type: list
  elements: dict
  sample:
    - host: esxi-0
      cluster: gpu-cluster
      vm: ocp-worker-0
      vm_power_state: poweredOn
      vm_host: esxi-0
      node: ocp-worker-0
      node_found: true
      gpus: [{model: a100-80g, memory_gib: 80, count: 2}]
      passthrough: {capable: 2, enabled: 2, active: 2, reboot_pending: 0}
      vm_gpus: 2
      vm_gpus_in_use: 2
      gpus_expected: 2
      node_allocatable_gpus: 2
      node_gpu_product: NVIDIA-A100-80GB-PCIe
      node_gpu_memory_gib: 80.0
      problems: []
problems:
  description: Every problem of every row, each naming its host, VM or node.
  returned: always
  type: list
  elements: str
  sample: ["node ocp-worker-3 lost its GPUs: 0 allocatable nvidia.com/gpu (expected 2)"]
hardware:
  description:
    - The planner's hardware as discovered (keys found only). C(nodes) and
      C(gpus_per_node) are the largest uniform slice of allocatable GPUs.
  returned: always
  type: dict
  sample: {nodes: 8, gpus_per_node: 2, gpu_memory_gib: 80.0, gpu_model: a100-80g}
hardware_sources:
  description: For each key of RV(hardware), V(vsphere) or V(cluster).
  returned: always
  type: dict
table:
  description: The report as a short fixed-width table, one line per worker.
  returned: always
  type: list
  elements: str
summary:
  description: One line with the counts and the number of problems.
  returned: always
  type: str
"""

import contextlib

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import GpuStackError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.fleet import read, report
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import (
    HAS_K8S,
    K8S_IMPORT_ERROR,
    K8sClient,
    k8s_argument_spec,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.client import (
    HAS_PYVMOMI,
    PYVMOMI_IMPORT_ERROR,
    VsphereClient,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.connection import (
    ConnectionParams,
    vsphere_argument_spec,
)


def _argument_spec() -> dict:
    spec = k8s_argument_spec()
    spec.update(
        vcenter={"type": "dict", "options": vsphere_argument_spec()},
        workers={"type": "list", "elements": "dict", "default": [], "options": {
            "host": {"type": "str"}, "vm": {"type": "str"}, "node": {"type": "str"},
            "gpus": {"type": "int"},
        }},
        gpus_per_vm={"type": "int", "default": 0},
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=_argument_spec(), supports_check_mode=True)
    p = module.params
    if not HAS_K8S:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=K8S_IMPORT_ERROR)
    if p["vcenter"] and not HAS_PYVMOMI:
        module.fail_json(msg=missing_required_lib("pyvmomi", reason="to read vcenter"),
                         exception=PYVMOMI_IMPORT_ERROR)
    try:
        workers = report.parse_workers(p["workers"], p["gpus_per_vm"])
        conn = ConnectionParams.from_params(p["vcenter"]) if p["vcenter"] else None
        k8s = K8sClient.from_params(p)
        with VsphereClient(conn) if conn else contextlib.nullcontext() as vclient:
            result = read.run(k8s, vclient, workers, p["gpus_per_vm"])
    except GpuStackError as exc:
        module.fail_json(**exc.fail_kwargs())
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
