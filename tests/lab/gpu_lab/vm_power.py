"""The power of each vSphere VM, as the lab's node-power controller sees it.

``VmPowerWatch`` keeps one pyvmomi session to the vSphere lab (its connection file,
``$GPU_LAB_HOME/vsphere.json``) and follows ``runtime.powerState`` of every VM with the
property collector's ``WaitForUpdatesEx``: the collector queues each change, so a VM that
goes off and on again between two reads still shows both changes, and its power-on count
(``VmPower.boots``) goes up by one for each power-on seen after the first read. A reader
that polled the state could miss a short power cycle; a node's new boot would then never
be seen. Without the file, or while the simulator does not answer, the watch knows no VM
and tries again every few seconds.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_RETRY_SECONDS = 2.0
_WAIT_SECONDS = 1


@dataclass(frozen=True)
class VmPower:
    """A VM's power as last seen: on or not, and how many power-ons were seen."""

    on: bool
    boots: int = 0


class VmPowerWatch:
    """Follows the power of every VM of a vSphere lab in a daemon thread."""

    def __init__(self, connection_file: Path) -> None:
        self.connection_file = connection_file
        self.listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._vms: dict[str, VmPower] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error = ""

    # --- what the controller reads ------------------------------------------------------
    def power(self) -> dict[str, VmPower]:
        with self._lock:
            return dict(self._vms)

    # --- the thread ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="vm-power-watch")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.connection_file.exists():
                    self._follow()
                else:
                    self.error = f"no vSphere lab ({self.connection_file} absent)"
            except Exception as exc:  # the simulator may be down or restarting: retry
                self.error = f"vSphere lab unreachable: {exc}"
                log.debug("VM power watch: %s", self.error)
            self._stop.wait(_RETRY_SECONDS)

    def _connect(self) -> Any:
        from pyVim.connect import SmartConnect

        info = json.loads(self.connection_file.read_text())
        ca = info.get("ca_path")
        context = ssl.create_default_context(cafile=ca) if ca else None
        return SmartConnect(host=info["hostname"], port=int(info["port"]),
                            user=info["username"], pwd=info["password"], sslContext=context,
                            disableSslCertValidation=context is None, connectionPoolTimeout=10)

    def _follow(self) -> None:
        from pyVim.connect import Disconnect
        from pyVmomi import vim, vmodl

        si = self._connect()
        try:
            content = si.RetrieveContent()
            view = content.viewManager.CreateContainerView(content.rootFolder,
                                                           [vim.VirtualMachine], True)
            spec = vmodl.query.PropertyCollector.FilterSpec(
                objectSet=[vmodl.query.PropertyCollector.ObjectSpec(
                    obj=view, skip=True, selectSet=[vmodl.query.PropertyCollector.TraversalSpec(
                        name="view", path="view", skip=False, type=vim.view.ContainerView)])],
                propSet=[vmodl.query.PropertyCollector.PropertySpec(
                    type=vim.VirtualMachine, pathSet=["name", "runtime.powerState"])])
            collector = content.propertyCollector.CreatePropertyCollector()
            collector.CreateFilter(spec, partialUpdates=True)
            options = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=_WAIT_SECONDS)
            names: dict[str, str] = {}
            version, first = "", True
            self.error = ""
            while not self._stop.is_set():
                update = collector.WaitForUpdatesEx(version, options)
                if update is None:
                    continue
                version = update.version
                if self._apply(update, names, first):
                    for listener in list(self.listeners):
                        listener()
                first = False
        finally:
            with self._lock:
                self._vms.clear()
            Disconnect(si)

    def _apply(self, update: Any, names: dict[str, str], first: bool) -> bool:
        changed = False
        for filter_set in update.filterSet or []:
            for obj in filter_set.objectSet or []:
                key = obj.obj._moId
                power = None
                for change in obj.changeSet or []:
                    if change.name == "name":
                        names[key] = change.val
                    elif change.name == "runtime.powerState":
                        power = str(change.val) == "poweredOn"
                name = names.get(key)
                if name is None or power is None:
                    continue
                with self._lock:
                    before = self._vms.get(name)
                    boots = before.boots if before else 0
                    if power and not first and before is not None and not before.on:
                        boots += 1
                    self._vms[name] = VmPower(power, boots)
                changed = True
        return changed

    def describe(self) -> str:
        if self.error:
            return self.error
        vms = self.power()
        off = sorted(n for n, p in vms.items() if not p.on)
        return f"VM power: {len(vms) - len(off)} on, off: {', '.join(off) or 'none'}"
