# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Cordon and drain the OpenShift node of a worker VM around its power cycle.

``NodeDrain`` is what the VM side calls, in this order:

1. ``prepare(vm_name, vm_uuid)`` (reads only, also in check mode): finds the node (its
   ``spec.providerID`` ``vsphere://<VM BIOS UUID>``, as the vSphere cloud provider sets
   it; else the node named as the VM; or the node given by name) and lists the pods a
   drain evicts; returns that plan.
2. ``drain()``: cordons the node (``spec.unschedulable``, server-side apply), evicts its
   pods through the Eviction API (DaemonSet pods and mirror pods stay, as with
   ``oc adm drain``) and waits until they are gone. A PodDisruptionBudget that refuses
   an eviction (429) is retried with a progress line at a steady pace until the drain
   timeout, then ``drain()`` fails saying which pods are blocked; the node stays
   cordoned and the caller has not touched the VM.
3. ``restore()`` after the VM is on again: waits for the node to be Ready with a new
   ``status.nodeInfo.bootID`` (a Ready condition read before the kubelet came back is
   the old boot's; a node that reports no boot ID counts as back once Ready), then
   uncordons it, unless it was cordoned before we came (an
   operator's cordon is kept, as the rolling reboot keeps an operator's maintenance
   mode). Our cordon carries the annotation ``CORDON_MARK`` until the uncordon, so a
   rerun after a failed drain knows the cordon is ours and lifts it when done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    OperationFailedError,
    WaitTimeout,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.wait import (
    WaitStatus,
    wait_for,
)

PROVIDER_PREFIX = "vsphere://"
LOOKUPS = ("auto", "provider_id", "name")
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
MANAGER_SUFFIX = "drain"
CORDON_MARK = "llmops.gpu_stack/cordoned-for"


@dataclass
class DrainRequest:
    node_name: str | None = None  # the node, when its name is known
    node_lookup: str = "auto"  # auto: providerID, then the VM's name
    drain_timeout: float = 600.0
    ready_timeout: float = 900.0
    grace_period: int | None = None  # the pods' own terminationGracePeriodSeconds if None
    interval: float = 2.0
    progress_every: float = 15.0


@dataclass
class _Node:
    name: str
    was_cordoned: bool
    boot_id: str
    evict: list = field(default_factory=list)  # (namespace, name, uid)
    kept: list = field(default_factory=list)  # "namespace/name (why)"


def provider_id(vm_uuid: str) -> str:
    return f"{PROVIDER_PREFIX}{vm_uuid.lower()}"


def _ready(node: dict) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _boot_id(node: dict) -> str:
    return ((node.get("status") or {}).get("nodeInfo") or {}).get("bootID") or ""


def _why_kept(pod: dict) -> str:
    meta = pod.get("metadata") or {}
    if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
        return "mirror pod"
    if any(o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or []):
        return "DaemonSet"
    return ""


def _ref(pod: dict) -> str:
    meta = pod["metadata"]
    return f"{meta.get('namespace')}/{meta['name']}"


def node_drain(auth: dict | None, request: DrainRequest, *,
               progress: Callable[[str], None] | None = None) -> NodeDrain | None:
    """A ``NodeDrain`` over the cluster that ``auth`` (kubernetes.core's connection
    options) reaches, None without ``auth``; the client is made only when a drain is
    planned, so a run that powers nothing off needs no cluster."""
    if auth is None:
        return None
    from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import (
        K8sClient,
        k8s_argument_spec,
    )

    names = {}
    for name, spec in k8s_argument_spec().items():
        names.update({alias: name for alias in [name, *(spec.get("aliases") or [])]})
    unknown = sorted(set(auth) - set(names))
    if unknown:
        raise InvalidInputError(f"k8s_auth: unknown option(s) {', '.join(unknown)} "
                                f"(known: {', '.join(sorted(k8s_argument_spec()))})")
    params = {names[key]: value for key, value in auth.items() if value is not None}
    return NodeDrain(lambda: K8sClient.from_params(params), request, progress=progress)


class NodeDrain:
    """The node behind one VM: plan, cordon and drain, then Ready and uncordon."""

    def __init__(self, client_factory: Callable, request: DrainRequest, *,
                 progress: Callable[[str], None] | None = None,
                 clock=time.monotonic, sleep=time.sleep):
        if request.node_lookup not in LOOKUPS:
            raise InvalidInputError(f"node_lookup must be one of {', '.join(LOOKUPS)}, "
                                    f"got {request.node_lookup!r}")
        self._factory = client_factory
        self._client = None
        self.request = request
        self._progress = progress
        self._clock, self._sleep = clock, sleep
        self.node: _Node | None = None
        self._vm = ""

    @property
    def client(self):
        if self._client is None:
            try:
                self._client = self._factory()
            except InvalidInputError as exc:
                raise InvalidInputError(f"{exc.msg} (the node drain needs them; drain: false "
                                        "powers the VM off without draining)") from exc
        return self._client

    def _say(self, line: str) -> None:
        if self._progress is not None:
            self._progress(line)

    # --- 1. plan (reads only) -----------------------------------------------------------
    def _find(self, vm_name: str, vm_uuid: str | None) -> dict:
        req, client = self.request, self.client
        if req.node_name:
            node = client.get("v1", "Node", req.node_name)
            if node is None:
                raise NotFoundError(f"node {req.node_name} (node_name) not found")
            return node
        wanted = provider_id(vm_uuid) if vm_uuid else None
        if req.node_lookup in ("auto", "provider_id") and wanted:
            for node in client.list("v1", "Node"):
                if ((node.get("spec") or {}).get("providerID") or "").lower() == wanted:
                    return node
        if req.node_lookup in ("auto", "name"):
            node = client.get("v1", "Node", vm_name)
            if node is not None:
                other = ((node.get("spec") or {}).get("providerID") or "").lower()
                if wanted and other.startswith(PROVIDER_PREFIX) and other != wanted:
                    raise ConflictError(
                        f"node {vm_name} belongs to another VM (providerID {other}, VM "
                        f"{vm_name} is {wanted}): give node_name")
                return node
        how = {"auto": f"providerID {wanted} or name {vm_name}",
               "provider_id": f"providerID {wanted}", "name": f"name {vm_name}"}
        raise NotFoundError(
            f"no OpenShift node for VM {vm_name} (looked up by {how[req.node_lookup]}): give "
            "node_name, or drain: false if the VM is no cluster node", vm=vm_name)

    def _pods(self, node_name: str) -> list:
        pods = self.client.list("v1", "Pod", field_selector=f"spec.nodeName={node_name}")
        return [p for p in pods if (p.get("spec") or {}).get("nodeName") == node_name]

    def prepare(self, vm_name: str, vm_uuid: str | None) -> dict:
        """Find the node and what a drain would evict; nothing is written."""
        node = self._find(vm_name, vm_uuid)
        name = node["metadata"]["name"]
        self._vm = vm_name
        ours = CORDON_MARK in ((node.get("metadata") or {}).get("annotations") or {})
        plan = _Node(name=name, boot_id=_boot_id(node), was_cordoned=not ours and bool(
            (node.get("spec") or {}).get("unschedulable")))
        for pod in self._pods(name):
            why = _why_kept(pod)
            if why:
                plan.kept.append(f"{_ref(pod)} ({why})")
            else:
                meta = pod["metadata"]
                plan.evict.append((meta.get("namespace"), meta["name"], meta.get("uid")))
        self.node = plan
        return {"node": name, "cordoned_before": plan.was_cordoned,
                "evict": [f"{ns}/{n}" for ns, n, _uid in plan.evict], "kept": plan.kept}

    # --- 2. cordon and drain --------------------------------------------------------------
    def _cordon(self, on: bool, vm_name: str = "") -> None:
        """Cordon with our mark, or uncordon (the mark, applied no more, is removed)."""
        meta = {"name": self.node.name}
        if on:
            meta["annotations"] = {CORDON_MARK: f"power cycle of VM {vm_name}"}
        self.client.apply({"apiVersion": "v1", "kind": "Node", "metadata": meta,
                           "spec": {"unschedulable": on}},
                          check_mode=False, force_conflicts=True, manager_suffix=MANAGER_SUFFIX)

    def _gone(self, namespace: str, name: str, uid: str | None) -> bool:
        pod = self.client.get("v1", "Pod", name, namespace)
        return pod is None or (uid is not None and pod["metadata"].get("uid") != uid)

    def drain(self) -> None:
        node = self.node
        if not node.was_cordoned:
            self._cordon(True, self._vm)
        self._say(f"node {node.name} cordoned; evicting {len(node.evict)} pod(s)")
        pending = list(node.evict)
        evicted: list = []
        blocked: dict = {}

        def _check() -> WaitStatus:
            for pod in list(pending):
                namespace, name, _uid = pod
                refused = self.client.evict(name, namespace,
                                            grace_period=self.request.grace_period)
                if refused:
                    blocked[f"{namespace}/{name}"] = refused
                else:
                    blocked.pop(f"{namespace}/{name}", None)
                    pending.remove(pod)
                    evicted.append(pod)
            gone = [p for p in evicted if self._gone(*p)]
            names = [f"{ns}/{n}" for ns, n, _uid in node.evict]
            status = WaitStatus.of(names, [f"{ns}/{n}" for ns, n, _uid in gone], "pods gone")
            if blocked:
                status = WaitStatus(done=False, present=status.present, missing=status.missing,
                                    progress=f"{status.progress}; blocked by a disruption "
                                             f"budget: {', '.join(sorted(blocked))}")
            return status

        try:
            wait_for(_check, timeout=self.request.drain_timeout,
                     what=f"the drain of node {node.name}", interval=self.request.interval,
                     progress=lambda status, elapsed: self._say(
                         f"+{elapsed:.0f}s drain of {node.name}: {status.progress}"),
                     progress_every=self.request.progress_every, clock=self._clock,
                     sleep=self._sleep)
        except WaitTimeout as exc:
            reasons = "; ".join(f"{pod}: {why}" for pod, why in sorted(blocked.items()))
            raise OperationFailedError(
                f"{exc.msg}{' (' + reasons + ')' if reasons else ''}; node {node.name} is "
                "left cordoned and its VM was not touched", reason=reasons or exc.msg,
                node=node.name, blocked=sorted(blocked)) from exc
        self._say(f"node {node.name} drained ({len(node.evict)} pod(s) evicted, "
                  f"{len(node.kept)} kept)")

    # --- 3. Ready again, uncordon -----------------------------------------------------------
    def restore(self) -> None:
        node = self.node

        def _check() -> WaitStatus:
            now = self.client.get("v1", "Node", node.name)
            if now is None:
                return WaitStatus(done=False, missing=(node.name,), progress="node not found")
            rebooted = not node.boot_id or _boot_id(now) != node.boot_id
            ready = _ready(now) and rebooted
            why = "Ready" if ready else ("Ready" if _ready(now) else "NotReady") + (
                "" if rebooted else ", still the boot before the power-off")
            return WaitStatus(done=ready, missing=() if ready else (node.name,),
                              progress=f"node {node.name}: {why}")

        wait_for(_check, timeout=self.request.ready_timeout, what=f"node {node.name} Ready",
                 interval=self.request.interval,
                 progress=lambda status, elapsed: self._say(f"+{elapsed:.0f}s {status.progress}"),
                 progress_every=self.request.progress_every, clock=self._clock, sleep=self._sleep)
        if node.was_cordoned:
            self._say(f"node {node.name} Ready; left cordoned (it was cordoned before)")
            return
        self._cordon(False)
        self._say(f"node {node.name} Ready and uncordoned")
