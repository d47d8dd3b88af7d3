"""The lab's vSphere: VMware's govmomi simulator with the GPU extension.

Python API::

    from gpu_lab import vsphere
    lab = vsphere.start(vsphere.Topology(hosts=8, gpus_per_host=2))  # free port, TLS + CA
    faults = vsphere.FaultInjector(lab.fault_url, lab.ca_path)
    faults.inject("ReconfigVM_Task", "NoDiskSpace", target="ocp-worker-3")
    vsphere.stop(lab)                                              # by PID

CLI: ``python -m gpu_lab.vsphere up|down|status`` (state in ``$GPU_LAB_HOME/vsphere.json``).
"""

from gpu_lab.vsphere.build import BuildError, build
from gpu_lab.vsphere.faults import NEVER_RECONNECT, FaultInjector
from gpu_lab.vsphere.process import (
    LabStartError,
    Topology,
    VsphereLab,
    is_running,
    start,
    stop,
)
from gpu_lab.vsphere.state import clear_state, load_state, save_state

__all__ = [
    "NEVER_RECONNECT",
    "BuildError",
    "FaultInjector",
    "LabStartError",
    "Topology",
    "VsphereLab",
    "build",
    "clear_state",
    "is_running",
    "load_state",
    "save_state",
    "start",
    "stop",
]
