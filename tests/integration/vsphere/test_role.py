"""The esxi_gpu_passthrough role on the simulated reference site (8 hosts x 2 GPUs),
through playbooks/esxi.yml and the lab inventory, as a user runs it."""

from __future__ import annotations

import pytest
from gpu_lab.vsphere import save_state

from ..playbook import REPO, run_playbook
from .vsphere_helpers import hosts, vm_state, vms

pytestmark = pytest.mark.lab


def _playbook(lab, tmp_path, *extra, json_out=True):
    """playbooks/esxi.yml with the lab inventory, which brings the connection itself
    (from $GPU_LAB_HOME/vsphere.json): no VMWARE_* in the environment."""
    save_state(lab, tmp_path / "vsphere.json")
    # the vSphere stage alone: no OpenShift lab here, so no node to drain (the drain
    # against the lab: test_vm_drain.py and the main job)
    return run_playbook(tmp_path, playbook=REPO / "playbooks" / "esxi.yml",
                        inventory=str(REPO / "inventories" / "lab" / "esxi.yml"), local=False,
                        extra=("-e", '{"esxi_gpu_passthrough_drain": false}', *extra),
                        json_out=json_out, env={"GPU_LAB_HOME": str(tmp_path)})


def test_role_reference_site_then_no_change(vsphere_lab, vsphere_si, tmp_path):
    proc = _playbook(vsphere_lab, tmp_path)
    assert proc.rc == 0, proc.output[-6000:]
    assert proc.stats["localhost"]["changed"] > 0

    all_hosts = hosts(vsphere_si)
    for i in range(8):
        vm = vms(vsphere_si)[f"ocp-worker-{i}"]
        host = all_hosts[f"esxi-{i}"]
        state = vm_state(vm)
        assert state["power"] == "poweredOn" and state["locked"] is True
        assert [g[1] for g in state["gpus"]] == ["0000:17:00.0", "0000:31:00.0"]
        bound = {b.instanceId for b in host.config.assignableHardwareBinding
                 if b.vm._moId == vm._moId}
        assert bound == {"0000:17:00.0", "0000:31:00.0"}
        assert all(i.passthruActive for i in host.config.pciPassthruInfo if i.passthruEnabled)

    again = _playbook(vsphere_lab, tmp_path)
    assert again.rc == 0, again.output[-4000:]
    assert again.stats["localhost"]["changed"] == 0


def test_role_check_mode_changes_nothing(vsphere_lab, vsphere_si, tmp_path):
    from .vsphere_helpers import snapshot

    before = snapshot(vsphere_si)
    proc = _playbook(vsphere_lab, tmp_path, "--check", "--tags", "preflight,hosts")
    assert proc.rc == 0, proc.output[-4000:]
    assert snapshot(vsphere_si) == before

    # The whole role on a fresh site: hosts would change, so the VM phase is not
    # predicted (nothing was enabled) and says so instead of failing.
    whole = _playbook(vsphere_lab, tmp_path, "--check", json_out=False)
    assert whole.rc == 0, whole.output[-4000:]
    assert "the VM attach phase is predicted only once those hosts" in whole.stdout
    assert snapshot(vsphere_si) == before


def test_password_never_in_verbose_output(vsphere_lab, tmp_path):
    """-vvv through the role (password from vsphere.json) and a direct module call
    with the password as a module argument, including a failing call."""
    proc = _playbook(vsphere_lab, tmp_path, "-vvv", json_out=False)
    assert proc.rc == 0, proc.output[-3000:]
    text = proc.output
    assert "ocp-worker-7" in text  # the verbose output is really there
    assert vsphere_lab.password not in text

    from .vsphere_helpers import run_tasks

    # As a user writes it: the password in a variable (vault, environment), never literal
    # in the playbook (Ansible prints the failing task's source lines).
    password = "{{ lookup('ansible.builtin.env', 'LAB_VCENTER_PASSWORD') }}"
    tasks = [
        {"name": "ok", "llmops.gpu_stack.esxi_gpu_info": {"password": password}},
        {"name": "fails", "ignore_errors": True,
         "llmops.gpu_stack.esxi_gpu_passthrough": {"password": password,
                                                   "esxi_hostnames": ["nope"]}},
    ]
    env = {"VMWARE_PASSWORD": "", "LAB_VCENTER_PASSWORD": vsphere_lab.password}
    rc, _results, out = run_tasks(vsphere_lab, tasks, tmp_path, verbose="-vvv",
                                  json_out=False, env_extra=env)
    assert rc == 0, out[-3000:]
    assert "unknown ESXi host(s): nope" in out
    assert vsphere_lab.password not in out
