# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Host and GPU selection options of the ESXi modules (vsphere/gpu.py selection_argument_spec)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  esxi_hostnames:
    description: Hosts to act on; unknown names are an error.
    type: list
    elements: str
    default: []
  clusters:
    description: All hosts of these clusters.
    type: list
    elements: str
    default: []
  datacenter:
    description: Only hosts of this datacenter.
    type: str
  gpu_models:
    description: GPUs whose short model (V(a100-80g)) or device name contains one of these.
    type: list
    elements: str
    default: []
  device_ids:
    description: GPUs with these PCI device ids (hex, e.g. V(0x20b5)).
    type: list
    elements: str
    default: []
"""
