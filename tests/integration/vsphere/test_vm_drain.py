"""vm_gpu_passthrough drains the VM's OpenShift node around the power cycle, against the
vSphere simulator and the lab's API server (its Eviction API honours disruption budgets).

The test plays the node's kubelet from the outside (``_Kubelet``): it watches the VM's
power state with raw pyvmomi, and when the VM goes off it records what the API server
says about the node at that moment (cordoned? which pods still on it?) and reports the
node NotReady; when the VM is on again it reports Ready with a new boot ID. It also
finishes the graceful deletion of evicted pods, as a kubelet does. Every check reads the
API server with the plain Kubernetes client and the simulator with pyvmomi.
"""

from __future__ import annotations

import threading

import pytest
from gpu_lab.fixtures.k8s import api_client
from gpu_lab.fixtures.vsphere import connect
from kubernetes import client
from kubernetes.client.rest import ApiException

from .vsphere_helpers import enable_passthrough_raw, run_module, vm_state, vms

pytestmark = pytest.mark.lab

VM = "ocp-worker-0"
NS = "drain-apps"
MARK = "llmops.gpu_stack/cordoned-for"


class _Kubelet(threading.Thread):
    def __init__(self, lab, server):
        super().__init__(daemon=True)
        self.lab, self.server = lab, server
        self.stop = threading.Event()
        self.at_power_off: dict | None = None
        self.transitions: list = []

    def run(self):
        si = connect(self.lab)
        api = api_client(self.server)
        core = client.CoreV1Api(api)
        vm = vms(si)[VM]
        was = str(vm.runtime.powerState)
        try:
            while not self.stop.wait(0.1):
                self._finish_deletions(core)
                now = str(vm.runtime.powerState)
                if now == was:
                    continue
                self.transitions.append(now)
                if now == "poweredOff" and self.at_power_off is None:
                    node = core.read_node(VM)
                    self.at_power_off = {
                        "unschedulable": node.spec.unschedulable,
                        "pods": sorted(p.metadata.name for p in core.list_namespaced_pod(NS).items
                                       if p.spec.node_name == VM)}
                self._report(core, ready=now == "poweredOn", new_boot=now == "poweredOn")
                was = now
        finally:
            api.close()

    @staticmethod
    def _finish_deletions(core):
        for pod in core.list_namespaced_pod(NS).items:
            if pod.metadata.deletion_timestamp is not None:
                try:
                    core.delete_namespaced_pod(pod.metadata.name, NS, grace_period_seconds=0)
                except ApiException as exc:
                    if exc.status != 404:
                        raise

    def _report(self, core, *, ready: bool, new_boot: bool):
        for _attempt in range(20):
            node = core.read_node_status(VM)
            for cond in node.status.conditions:
                if cond.type == "Ready":
                    cond.status = "True" if ready else "Unknown"
                    cond.reason = "KubeletReady" if ready else "NodeStatusUnknown"
            if new_boot:
                node.status.node_info.boot_id = f"boot-{len(self.transitions)}"
            try:
                core.replace_node_status(VM, node)
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise


def _pod(core, name, node, labels, owner=None):
    meta = {"name": name, "labels": labels}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner, "name": "owner",
                                    "uid": "00000000-0000-0000-0000-000000000001"}]
    core.create_namespaced_pod(NS, {"metadata": meta, "spec": {
        "nodeName": node, "containers": [{"name": "c", "image": "registry.invalid/x:1"}]}})
    core.patch_namespaced_pod_status(name, NS, {"status": {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})


def _node(core):
    node = core.read_node(VM)
    ready = next(c.status for c in node.status.conditions if c.type == "Ready")
    return node.spec.unschedulable, (node.metadata.annotations or {}).get(MARK), ready


def _app_pods(core):
    return sorted((p.metadata.name, p.spec.node_name) for p in core.list_namespaced_pod(NS).items)


def test_node_cordoned_and_drained_before_power_off_then_ready_and_uncordoned(
        vsphere_lab, vsphere_si, vsphere_faults, k8s_protocol_server, tmp_path):
    server = k8s_protocol_server
    api = api_client(server)
    core, policy = client.CoreV1Api(api), client.PolicyV1Api(api)
    uuid = vms(vsphere_si)[VM].config.uuid
    core.patch_node(VM, {"spec": {"providerID": f"vsphere://{uuid.lower()}"}})
    core.create_namespace({"metadata": {"name": NS}})
    _pod(core, "web-1", VM, {"app": "web"}, owner="ReplicaSet")
    _pod(core, "web-2", VM, {"app": "web"}, owner="ReplicaSet")
    _pod(core, "node-agent", VM, {"app": "agent"}, owner="DaemonSet")
    _pod(core, "elsewhere", "ocp-worker-1", {"app": "web"}, owner="ReplicaSet")
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
    kubelet = _Kubelet(vsphere_lab, server)
    kubelet.start()
    try:
        rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough",
                                  {**args, "drain_timeout": 120, "node_ready_timeout": 120})
    finally:
        kubelet.stop.set()
        kubelet.join(10)
    assert rc == 0 and res["changed"] is True and res["power_cycled"] is True, out
    assert kubelet.transitions == ["poweredOff", "poweredOn"]
    assert kubelet.at_power_off == {"unschedulable": True, "pods": ["node-agent"]}
    assert _node(core) == (False, None, "True")
    assert _app_pods(core) == [("elsewhere", "ocp-worker-1"), ("node-agent", VM)]
    state = vm_state(vms(vsphere_si)[VM])
    assert state["power"] == "poweredOn" and len(state["gpus"]) == 1
    assert res["node"]["node"] == VM and any("uncordoned" in line for line in res["progress"])
    api.close()
