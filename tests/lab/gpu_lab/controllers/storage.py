"""PersistentVolumeClaims bound through StorageClasses, with local directories behind them.

The lab has two classes, as an OpenShift on vSphere with an NFS provisioner would:
``thin-csi`` (default, vSphere CSI: ReadWriteOnce only, WaitForFirstConsumer) and
``nfs-csi`` (ReadWriteMany, Immediate). A claim asking a class for an access mode its
provisioner lacks stays Pending with a ProvisioningFailed event. Each provisioned volume
is a directory under ``$GPU_LAB_HOME/volumes/`` (annotation ``gpu-lab.llmops.io/local-path``)
so a pod run as a local process can mount it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..apiserver.store import Event
from .base import Controller

LOCAL_PATH = "gpu-lab.llmops.io/local-path"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
ACCESS_MODES = {
    "csi.vsphere.vmware.com": {"ReadWriteOnce", "ReadWriteOncePod"},
    "nfs.csi.k8s.io": {"ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"},
}


class VolumeController(Controller):
    name = "persistentvolume-binder"
    watches = (("", "persistentvolumeclaims"), ("", "persistentvolumes"),
               ("storage.k8s.io", "storageclasses"))

    def wants(self, event: Event) -> bool:
        return event.key in self.watches

    @property
    def volumes_dir(self) -> Path:
        return self.settings.home / "volumes"

    def reconcile(self) -> float | None:
        claims = {(c["metadata"]["namespace"], c["metadata"]["name"]): c
                  for c in self.list("", "persistentvolumeclaims")}
        for claim in claims.values():
            if not claim["spec"].get("volumeName") and not claim["metadata"].get(
                    "deletionTimestamp"):
                self._provision(claim)
        for pv in self.list("", "persistentvolumes"):
            ref = pv["spec"].get("claimRef") or {}
            if ref and (ref.get("namespace"), ref.get("name")) not in claims:
                self._release(pv)
        return None

    def _provision(self, claim: dict[str, Any]) -> None:
        spec = claim["spec"]
        class_name = spec.get("storageClassName")
        sc = self.get("storage.k8s.io", "storageclasses", None, class_name) if class_name else None
        if sc is None:
            self.event(claim, "ProvisioningFailed",
                       f'storageclass.storage.k8s.io "{class_name}" not found', "Warning")
            return
        supported = ACCESS_MODES.get(sc["provisioner"], {"ReadWriteOnce"})
        wanted = spec.get("accessModes") or []
        missing = [m for m in wanted if m not in supported]
        if missing:
            self.event(claim, "ProvisioningFailed",
                       f'failed to provision volume with StorageClass "{class_name}": rpc error: '
                       f"code = InvalidArgument desc = volume access mode {missing[0]} is not "
                       f"supported by {sc['provisioner']}", "Warning")
            return
        annotations = claim["metadata"].get("annotations") or {}
        if sc.get("volumeBindingMode") == "WaitForFirstConsumer" and SELECTED_NODE not in (
                annotations):
            self.event(claim, "WaitForFirstConsumer",
                       "waiting for first consumer to be created before binding")
            return
        pv_name = f"pvc-{claim['metadata']['uid']}"
        path = self.volumes_dir / pv_name
        path.mkdir(parents=True, exist_ok=True)
        size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        self.create("", "persistentvolumes", {
            "metadata": {"name": pv_name, "annotations": {
                "pv.kubernetes.io/provisioned-by": sc["provisioner"], LOCAL_PATH: str(path)},
                "finalizers": ["kubernetes.io/pv-protection"]},
            "spec": {"capacity": {"storage": size}, "accessModes": wanted,
                     "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
                     "storageClassName": class_name, "volumeMode": spec.get("volumeMode",
                                                                            "Filesystem"),
                     "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                                  "namespace": claim["metadata"]["namespace"],
                                  "name": claim["metadata"]["name"],
                                  "uid": claim["metadata"]["uid"]},
                     "csi": {"driver": sc["provisioner"], "volumeHandle": pv_name,
                             "fsType": "ext4"}},
        })
        pv = self.get("", "persistentvolumes", None, pv_name)
        if pv is not None:
            self.set_status("", "persistentvolumes", pv, {"phase": "Bound"})
        annotations = {"pv.kubernetes.io/bind-completed": "yes",
                       "pv.kubernetes.io/bound-by-controller": "yes",
                       "volume.kubernetes.io/storage-provisioner": sc["provisioner"]}
        bound = self.patch("", "persistentvolumeclaims", claim["metadata"]["namespace"],
                           claim["metadata"]["name"],
                           {"metadata": {"annotations": annotations},
                            "spec": {"volumeName": pv_name}})
        if bound is None:
            return
        current = self.get("", "persistentvolumeclaims", claim["metadata"]["namespace"],
                           claim["metadata"]["name"])
        if current is not None:
            self.set_status("", "persistentvolumeclaims", current, {
                "phase": "Bound", "accessModes": wanted, "capacity": {"storage": size}})
        self.event(claim, "ProvisioningSucceeded",
                   f"Successfully provisioned volume {pv_name}")

    def _release(self, pv: dict[str, Any]) -> None:
        name = pv["metadata"]["name"]
        if pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
            local = (pv["metadata"].get("annotations") or {}).get(LOCAL_PATH)
            if local and Path(local).parent == self.volumes_dir:
                shutil.rmtree(local, ignore_errors=True)
            self.patch("", "persistentvolumes", None, name, {"metadata": {"finalizers": None}})
            self.delete("", "persistentvolumes", None, name, grace=0)
        elif (pv.get("status") or {}).get("phase") != "Released":
            self.set_status("", "persistentvolumes", pv, {"phase": "Released"})
