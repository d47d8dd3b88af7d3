#!/usr/bin/python
# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Turn PCI passthrough of NVIDIA GPUs on or off on ESXi hosts, rebooting when asked."""

from __future__ import annotations

DOCUMENTATION = r"""
module: esxi_gpu_passthrough
short_description: Enable or disable GPU passthrough on ESXi hosts
description:
  - Sets C(passthruEnabled) of the selected NVIDIA GPUs on the selected hosts with
    C(HostPciPassthruSystem.UpdatePassthruConfig), hosts in parallel.
  - Reports the hosts that still need a reboot for the change to become active
    (C(reboot_required)); with O(reboot=if_needed) it rolls through them, O(batch_size)
    at a time (maintenance mode, reboot, wait for reconnection, exit maintenance mode),
    stopping at the first failed host. Hosts an operator had put into maintenance mode
    are rebooted if they need it but left in maintenance mode.
  - Everything is validated before the first write (unknown hosts, hosts without a
    matching GPU, disconnected hosts, GPUs in use, hosts to reboot that still run VMs).
version_added: 0.1.0
author:
  - llmops.gpu_stack maintainers (@llmops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - llmops.gpu_stack.vsphere
  - llmops.gpu_stack.gpu_selection
options:
  pci_ids:
    description: GPUs by PCI address (V(0000:17:00.0)).
    type: list
    elements: str
    default: []
  state:
    description: Passthrough on (V(enabled)) or off (V(disabled)).
    type: str
    choices: [enabled, disabled]
    default: enabled
  apply_now:
    description: Ask hosts that can (vSphere 7+) to activate the change without a reboot.
    type: bool
    default: true
  reboot:
    description: V(never) only reports C(reboot_required); V(if_needed) reboots those hosts.
    type: str
    choices: [never, if_needed]
    default: never
  batch_size:
    description: Hosts rebooted at the same time.
    type: int
    default: 1
  parallel:
    description: Hosts whose configuration is updated at the same time.
    type: int
    default: 16
  reboot_timeout:
    description: Seconds to wait for a rebooted host to reconnect.
    type: int
    default: 900
  task_timeout:
    description: Seconds to wait for one vSphere task.
    type: int
    default: 600
  lock_timeout:
    description:
      - Seconds to wait for another rolling reboot of the same cluster to finish.
      - Rolling reboots take turns per cluster through a lock held on vCenter (the custom
        attribute C(llmops.gpu_stack.rollout_lock.<cluster id>), whose value on the cluster
        names the holder and the lease's end), so concurrent runs, from any controller,
        never have more than O(batch_size) hosts of a cluster in maintenance mode at once.
    type: int
    default: 3600
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
- name: Enable passthrough of every A100 in the cluster, rebooting hosts if needed
  llmops.gpu_stack.esxi_gpu_passthrough:
    clusters: [gpu-cluster]
    gpu_models: [a100-80g]
    reboot: if_needed
"""

RETURN = r"""
hosts_changed:
  description: Hosts whose passthrough configuration was changed.
  returned: always
  type: list
  elements: str
reboot_required:
  description: Hosts whose change is not active yet (a reboot is needed).
  returned: always
  type: list
  elements: str
rebooted:
  description: Hosts rebooted by this run.
  returned: always
  type: list
  elements: str
progress:
  description:
    - The rolling reboot's progress lines, also written to the module log as they
      happen. Which hosts are rebooting, then every 30 s which are not back yet.
  returned: always
  type: list
  elements: str
gpus:
  description: The selected GPUs after the change (see esxi_gpu_info).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import GpuStackError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere import host_passthrough
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
        pci_ids={"type": "list", "elements": "str", "default": []},
        state={"type": "str", "choices": ["enabled", "disabled"], "default": "enabled"},
        apply_now={"type": "bool", "default": True},
        reboot={"type": "str", "choices": ["never", "if_needed"], "default": "never"},
        batch_size={"type": "int", "default": 1},
        parallel={"type": "int", "default": 16},
        reboot_timeout={"type": "int", "default": 900},
        task_timeout={"type": "int", "default": 600},
        lock_timeout={"type": "int", "default": 3600},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    if not HAS_PYVMOMI:
        module.fail_json(msg=missing_required_lib("pyvmomi"), exception=PYVMOMI_IMPORT_ERROR)
    p = module.params
    lines: list = []
    try:
        request = host_passthrough.Request(
            hosts=p["esxi_hostnames"], clusters=p["clusters"], datacenter=p["datacenter"],
            gpu_filter=GpuFilter.build(p["gpu_models"], p["device_ids"], p["pci_ids"]),
            enabled=p["state"] == "enabled", apply_now=p["apply_now"], reboot=p["reboot"],
            batch_size=p["batch_size"], parallel=p["parallel"],
            reboot_timeout=p["reboot_timeout"], task_timeout=p["task_timeout"],
            lock_timeout=p["lock_timeout"], check_mode=module.check_mode,
            progress=lambda line: (lines.append(line), module.log(line)),
        )
        with VsphereClient(ConnectionParams.from_params(p)) as client:
            result = host_passthrough.run(client, request)
        result["progress"] = lines
    except GpuStackError as exc:
        module.fail_json(**exc.fail_kwargs())
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
