#!/usr/bin/python
# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""List the NVIDIA GPUs of ESXi hosts with their passthrough state."""

from __future__ import annotations

DOCUMENTATION = r"""
module: esxi_gpu_info
short_description: List NVIDIA GPUs of ESXi hosts and their passthrough state
description:
  - Reports every NVIDIA GPU of the selected hosts (all hosts when nothing is selected)
    with host, cluster, datacenter, PCI id, vendor/device id and name, memory when the
    model is known, passthrough capable/enabled/active, reboot pending and the VM it is
    bound to.
  - Reads the whole fleet in one vSphere round-trip (a second one only to name VMs
    that hold GPUs).
version_added: 0.1.0
author:
  - llmops.gpu_stack maintainers (@llmops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - llmops.gpu_stack.vsphere
  - llmops.gpu_stack.gpu_selection
options:
  vm_names:
    description:
      - VMs to locate as well (host and power state, in the same read); unknown names
        are an error.
    type: list
    elements: str
    default: []
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
- name: Every GPU of the cluster
  llmops.gpu_stack.esxi_gpu_info:
    clusters: [gpu-cluster]
  register: gpu_info
"""

RETURN = r"""
gpus:
  description: One entry per GPU.
  returned: always
  type: list
  elements: dict
  sample:
    - host: esxi-0
      pci_id: "0000:17:00.0"
      vendor_id: "0x10de"
      device_id: "0x20b5"
      device_name: GA100 [A100 PCIe 80GB]
      model: a100-80g
      memory_gb: 80
      passthrough_capable: true
      passthrough_enabled: true
      passthrough_active: true
      reboot_pending: false
      bound_vm: ocp-worker-0
hosts:
  description: Per host, GPU counts (total, active, free) and whether a reboot is pending.
  returned: always
  type: dict
total:
  description: Number of GPUs reported.
  returned: always
  type: int
vms:
  description: For each of O(vm_names), its C(host) and C(power_state).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import GpuStackError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere import gpu_info
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.client import (
    HAS_PYVMOMI,
    PYVMOMI_IMPORT_ERROR,
    VsphereClient,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.connection import (
    ConnectionParams,
    vsphere_argument_spec,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.gpu import (
    GpuFilter,
    selection_argument_spec,
)


def main():
    spec = vsphere_argument_spec()
    spec.update(selection_argument_spec())
    spec.update(
        vm_names={"type": "list", "elements": "str", "default": []},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    if not HAS_PYVMOMI:
        module.fail_json(msg=missing_required_lib("pyvmomi"), exception=PYVMOMI_IMPORT_ERROR)
    p = module.params
    try:
        gpu_filter = GpuFilter.build(p["gpu_models"], p["device_ids"])
        with VsphereClient(ConnectionParams.from_params(p)) as client:
            result = gpu_info.run(client, p["esxi_hostnames"], p["clusters"], p["datacenter"],
                                  gpu_filter, p["vm_names"])
    except GpuStackError as exc:
        module.fail_json(**exc.fail_kwargs())
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
