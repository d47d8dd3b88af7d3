"""vm_gpu_passthrough drains the VM's OpenShift node around the power cycle, against the
vSphere simulator and a lab API server linked to it: its Eviction API honours disruption
budgets, its kubelet removes evicted pods, and its node-power controller makes the node
NotReady (NodeStatusUnknown) while the VM is off and Ready with a new boot ID once it is
on, as a real node does (gpu_lab/controllers/node_power.py).

``_Watcher`` only looks: it follows the VM's power state with raw pyvmomi and records what
the API server says about the node when the VM goes off (cordoned? which pods still on
it?) and while it is off. Every check reads the API server with the plain Kubernetes
client and the simulator with pyvmomi.
"""

from __future__ import annotations

import threading

import pytest
from gpu_lab import vsphere
from gpu_lab.fixtures.k8s import api_client
from gpu_lab.fixtures.vsphere import connect
from kubernetes import client

from ..lab.waiting import wait_for
from .vsphere_helpers import enable_passthrough_raw, run_module, vm_state, vms

pytestmark = pytest.mark.lab

VM = "ocp-worker-0"
NS = "drain-apps"
MARK = "llmops.gpu_stack/cordoned-for"


class _Watcher(threading.Thread):
    def __init__(self, lab, server):
        super().__init__(daemon=True)
        self.lab, self.server = lab, server
        self.stop = threading.Event()
        self.at_power_off: dict | None = None
        self.ready_while_off: set = set()
        self.transitions: list = []

    def run(self):
        si = connect(self.lab)
        api = api_client(self.server)
        core = client.CoreV1Api(api)
        vm = vms(si)[VM]
        was = str(vm.runtime.powerState)
        try:
            while not self.stop.wait(0.1):
                now = str(vm.runtime.powerState)
                if now == "poweredOff":
                    ready = next(c for c in core.read_node(VM).status.conditions
                                 if c.type == "Ready")
                    self.ready_while_off.add((ready.status, ready.reason))
                if now == was:
                    continue
                self.transitions.append(now)
                if now == "poweredOff" and self.at_power_off is None:
                    node = core.read_node(VM)
                    self.at_power_off = {
                        "unschedulable": node.spec.unschedulable,
                        "pods": sorted(p.metadata.name for p in core.list_namespaced_pod(NS).items
                                       if p.spec.node_name == VM)}
                was = now
        finally:
            api.close()


def _owner(apps, kind, name):
    """An owner the lab runs no controller for (it creates and deletes no pod)."""
    body = {"metadata": {"name": name}, "spec": {
        "selector": {"matchLabels": {"owner": name}},
        "template": {"metadata": {"labels": {"owner": name}}, "spec": {
            "containers": [{"name": "c", "image": "registry.example/x:1"}]}}}}
    if kind == "DaemonSet":
        return apps.create_namespaced_daemon_set(NS, body)
    return apps.create_namespaced_stateful_set(NS, {**body, "spec": {
        **body["spec"], "serviceName": name, "replicas": 3}})


def _pod(core, name, node, labels, owner):
    meta = {"name": name, "labels": labels, "ownerReferences": [{
        "apiVersion": "apps/v1", "kind": owner.kind, "name": owner.metadata.name,
        "uid": owner.metadata.uid, "controller": True}]}
    core.create_namespaced_pod(NS, {"metadata": meta, "spec": {
        "nodeName": node, "containers": [{"name": "c", "image": "registry.example/x:1"}]}})


def _node(core):
    node = core.read_node(VM)
    ready = next(c.status for c in node.status.conditions if c.type == "Ready")
    return node.spec.unschedulable, (node.metadata.annotations or {}).get(MARK), ready


def _app_pods(core):
    return sorted((p.metadata.name, p.spec.node_name) for p in core.list_namespaced_pod(NS).items)


def test_node_cordoned_and_drained_before_power_off_then_ready_and_uncordoned(
        vsphere_lab, vsphere_si, vsphere_faults, k8s_lab_factory, tmp_path):
    home = tmp_path / "lab"
    home.mkdir()
    vsphere.save_state(vsphere_lab, home / "vsphere.json")
    server = k8s_lab_factory(home=home, workers=2)
    api = api_client(server)
    core, policy = client.CoreV1Api(api), client.PolicyV1Api(api)
    apps = client.AppsV1Api(api)
    uuid = vms(vsphere_si)[VM].config.uuid
    core.patch_node(VM, {"spec": {"providerID": f"vsphere://{uuid.lower()}"}})
    core.create_namespace({"metadata": {"name": NS}})
    web, agent = _owner(apps, "StatefulSet", "web"), _owner(apps, "DaemonSet", "agent")
    _pod(core, "web-1", VM, {"app": "web"}, web)
    _pod(core, "web-2", VM, {"app": "web"}, web)
    _pod(core, "node-agent", VM, {"app": "agent"}, agent)
    _pod(core, "elsewhere", "ocp-worker-1", {"app": "web"}, web)
    wait_for(lambda: all(any(c.type == "Ready" and c.status == "True"
                             for c in p.status.conditions or [])
                         for p in core.list_namespaced_pod(NS).items), "the pods Ready")
    policy.create_namespaced_pod_disruption_budget(NS, {
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "web"}}}})
    enable_passthrough_raw(vsphere_si, ["esxi-0"])
    args = {"vm_name": VM, "gpu_count": 1, "allow_power_cycle": True, "drain_timeout": 6,
            "k8s_auth": {"kubeconfig": server.kubeconfig, "context": "lab-admin"}}
    before = _app_pods(core)

    # check mode: the plan names the pods; nothing is cordoned, evicted or powered off
    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough", args, check=True)
    assert rc == 0 and res["changed"] is True, out
    assert res["node"] == {"node": VM, "cordoned_before": False,
                           "evict": [f"{NS}/web-1", f"{NS}/web-2"],
                           "kept": [f"{NS}/node-agent (DaemonSet)"]}
    assert _node(core) == (None, None, "True") and _app_pods(core) == before

    # the budget refuses every eviction: the run fails, the node stays cordoned, the VM
    # is untouched (still on, no GPU)
    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough", args)
    assert rc != 0
    assert "disruption budget" in res["msg"] and "left cordoned" in res["msg"], res["msg"]
    assert _node(core)[:2] == (True, f"power cycle of VM {VM}")
    assert _app_pods(core) == before
    state = vm_state(vms(vsphere_si)[VM])
    assert state["power"] == "poweredOn" and state["gpus"] == []

    # budget relaxed: cordon, drain, power off, reconfigure, power on, Ready, uncordon
    policy.delete_namespaced_pod_disruption_budget("web", NS)
    vsphere_faults.inject("ReconfigVM_Task", delay_ms=1500, target=VM)  # a visible off time
    boot = core.read_node(VM).status.node_info.boot_id
    watcher = _Watcher(vsphere_lab, server)
    watcher.start()
    try:
        rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough",
                                  {**args, "drain_timeout": 120, "node_ready_timeout": 120})
    finally:
        watcher.stop.set()
        watcher.join(10)
    assert rc == 0 and res["changed"] is True and res["power_cycled"] is True, out
    assert watcher.transitions == ["poweredOff", "poweredOn"]
    assert watcher.at_power_off == {"unschedulable": True, "pods": ["node-agent"]}
    assert ("Unknown", "NodeStatusUnknown") in watcher.ready_while_off, watcher.ready_while_off
    assert _node(core) == (False, None, "True")
    assert core.read_node(VM).status.node_info.boot_id not in (boot, "")
    assert _app_pods(core) == [("elsewhere", "ocp-worker-1"), ("node-agent", VM)]
    state = vm_state(vms(vsphere_si)[VM])
    assert state["power"] == "poweredOn" and len(state["gpus"]) == 1
    assert res["node"]["node"] == VM and any("uncordoned" in line for line in res["progress"])
    api.close()
