"""Runs the controllers on the server's loop: dirty flags from store events, requeue timers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..apiserver.store import Event
from .base import Controller

if TYPE_CHECKING:
    from ..apiserver.server import LabServer

log = logging.getLogger(__name__)


class ControllerManager:
    def __init__(self, controllers: list[Controller]) -> None:
        self.controllers = controllers
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.poller: Any = None

    def names(self) -> list[str]:
        return [c.name for c in self.controllers]

    def get(self, name: str) -> Controller:
        return next(c for c in self.controllers if c.name == name)

    def on_event(self, event: Event) -> None:
        for c in self.controllers:
            if c.wants(event):
                c.dirty = True
                self._wake.set()

    def poke(self, name: str | None = None) -> None:
        """Ask for a pass of one controller (or all) soon."""
        for c in self.controllers:
            if name is None or c.name == name:
                c.dirty = True
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gpu-lab-controllers")

    async def stop(self) -> None:
        for c in self.controllers:
            closer = getattr(c, "close", None)
            if closer is not None:
                closer()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def run_once(self) -> None:
        loop_time = asyncio.get_running_loop().time()
        for c in self.controllers:
            if not c.dirty and (c.due is None or c.due > loop_time):
                continue
            c.dirty = False
            c.due = None
            try:
                delay = c.reconcile()
            except Exception:
                log.exception("controller %s failed", c.name)
                delay = 1.0
            if delay is not None:
                c.due = loop_time + max(delay, 0.005)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.run_once()
            if any(c.dirty for c in self.controllers):
                await asyncio.sleep(0.005)  # let requests in between passes
                continue
            dues = [c.due for c in self.controllers if c.due is not None]
            timeout = max(min(dues) - loop.time(), 0.0) if dues else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()


def start_controllers(server: LabServer) -> ControllerManager:
    from . import (
        gpu_operator,
        jobs,
        kserve,
        kubelet,
        kuberay,
        namespaces,
        network,
        nfd,
        node_power,
        olm,
        opendatahub,
        replicas,
        scheduler,
        storage,
    )

    poller = nfd.InventoryPoller(server.gpu_inventory)
    poller.start()
    controllers: list[Controller] = [
        namespaces.NamespaceController(server),
        namespaces.GarbageCollector(server),
        storage.VolumeController(server),
        scheduler.Scheduler(server),
        kubelet.Kubelet(server),
        replicas.DeploymentController(server),
        replicas.ReplicaSetController(server),
        jobs.JobController(server),
        network.RouteController(server),
        network.EndpointsController(server),
        olm.OlmController(server),
        nfd.NfdController(server, poller),
        gpu_operator.GpuOperatorController(server, poller),
        kuberay.RayClusterController(server),
        kserve.InferenceServiceController(server),
        opendatahub.DataScienceClusterController(server),
    ]
    connection_file = getattr(server.gpu_inventory, "connection_file", None)
    if connection_file is not None:  # a vSphere lab: nodes follow their VMs' power
        from ..vm_power import VmPowerWatch

        watch = VmPowerWatch(connection_file)
        controllers.append(node_power.NodePowerController(server, watch))
    manager = ControllerManager(controllers)
    manager.poller = poller
    server.store.subscribe(manager.on_event)
    manager.start()
    if connection_file is not None:
        loop = asyncio.get_running_loop()
        watch.listeners.append(lambda: loop.call_soon_threadsafe(manager.poke, "node-power"))
        watch.start()
    return manager
