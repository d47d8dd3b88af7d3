# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Model staging on a ReadWriteMany volume: the PVC, credentials, the stager Job.

The bytes are moved by the runtime image's ``gpu-stack-stage`` (resumable, verified,
atomic, marker-based no-op). This side only prepares and runs it:

- the PVC is created or adopted and must be ReadWriteMany (a StorageClass whose
  provisioner is known to be block-only is refused before any write); an optional static
  NFS PV as in the seed; the bound PV's reclaim policy is set (Retain by default);
- the stager Job of each run, its Secret and ConfigMap: ``staging_job.py``;
- after success the PVC records which source is staged where (annotation, written with a
  resourceVersion precondition and retried on conflict, so two models staged at once both
  end in it), so check mode can say whether a transfer would happen without touching the
  volume.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common import contract
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    ConflictError,
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.model_dir import (
    check_model_dir,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.retry import (
    Backoff,
    call_with_retries,
    retry_on,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.wait import (
    WaitStatus,
    wait_for,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.staging_job import (
    MOUNT,
    StagerJob,
    secret_urls,
)

ANNOTATION = "gpu-stack.llmops.io/staged"
RWO_ONLY_PROVISIONERS = ("csi.vsphere.vmware.com", "kubernetes.io/vsphere-volume",
                         "ebs.csi.aws.com", "pd.csi.storage.gke.io", "disk.csi.azure.com",
                         "kubernetes.io/aws-ebs", "kubernetes.io/gce-pd",
                         "cinder.csi.openstack.org")
_SOURCE_KEYS = {
    "hub": ("repo_id",), "s3": ("bucket",), "http": ("url", "manifest"),
    "archive": ("url",), "local": ("local_path",),
}


def validate_source(source: dict) -> dict:
    kind = source.get("type")
    if kind not in _SOURCE_KEYS:
        raise InvalidInputError(f"source.type must be one of {', '.join(_SOURCE_KEYS)}, "
                                f"got {kind!r}")
    missing = [k for k in _SOURCE_KEYS[kind] if not source.get(k)]
    if missing:
        raise InvalidInputError(f"source type {kind} needs source.{', source.'.join(missing)}")
    if kind == "local" and not Path(source["local_path"]).is_dir():
        raise InvalidInputError(f"source.local_path {source['local_path']} is not a directory "
                                "on the controller")
    return {k: v for k, v in source.items() if v not in (None, [], "")}


def local_manifest(root: str) -> dict:
    """The JSON manifest (path, size, sha256) of a local model directory."""
    files = []
    base = Path(root)
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        files.append({"path": path.relative_to(base).as_posix(), "size": path.stat().st_size,
                      "sha256": digest.hexdigest()})
    if not files:
        raise InvalidInputError(f"source.local_path {root} holds no files")
    return {"files": files}


def source_identity(source: dict, manifest: dict | None) -> str:
    """A digest of what is staged (no secrets): the source options and the manifest."""
    ident = {k: v for k, v in source.items() if k != "local_path"}
    for key, url in secret_urls(source).items():  # a signature changes, the data does not
        parts = urlsplit(url)
        ident[key] = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}" \
                     f"{parts.path}"
    if manifest is not None:
        ident["manifest"] = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()
                                           ).hexdigest()
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def upload_dir(model_dir: str, upload_id: str | None = None) -> str:
    """Where a local source's files are uploaded; with ``upload_id`` a directory of that
    run's own, so two runs of one model never upload into each other's files."""
    base = contract.upload_dir(f"{MOUNT}/{model_dir}")
    return f"{base}/{upload_id}" if upload_id else base


def volume_manifests(namespace: str, pvc: dict) -> list:
    """The model volume: a static NFS PV when ``pvc.nfs`` is given, and the RWX PVC
    (what the stage applies, and the GitOps export writes)."""
    out, spec = [], {"accessModes": ["ReadWriteMany"],
                     "resources": {"requests": {"storage": pvc.get("size", "100Gi")}}}
    nfs = pvc.get("nfs")
    if nfs:
        pv_name = f"{namespace}-{pvc['name']}"
        out.append({"apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": {"name": pv_name},
                    "spec": {"capacity": {"storage": pvc.get("size", "100Gi")},
                             "accessModes": ["ReadWriteMany"], "storageClassName": "",
                             "persistentVolumeReclaimPolicy": pvc.get(
                                 "reclaim_policy", "Retain"),
                             "nfs": {"server": nfs["server"], "path": nfs["path"]}}})
        spec.update(storageClassName="", volumeName=pv_name)
    elif pvc.get("storage_class"):
        spec["storageClassName"] = pvc["storage_class"]
    out.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": pvc["name"], "namespace": namespace},
                "spec": spec})
    return out


class ModelStaging(StagerJob):
    def __init__(self, client, namespace: str, pvc: dict, model_dir: str,
                 run_id: str | None = None):
        check_model_dir(model_dir)
        self.client, self.ns, self.pvc, self.model_dir = client, namespace, pvc, model_dir
        # Each run has its own Job (and Secret, ConfigMap): a concurrent run of the same
        # model never deletes another's live transfer; the stager's lock on the volume
        # serialises them and the later one finds the earlier one's marker.
        self.run_id = run_id or secrets.token_hex(3)
        self.model_key = hashlib.sha256(model_dir.encode()).hexdigest()[:16]

    # --- the volume -------------------------------------------------------------------
    def check_volume(self) -> dict | None:
        """The existing PVC (refused unless RWX), or None; StorageClass checked too."""
        existing = self.client.get("v1", "PersistentVolumeClaim", self.pvc["name"], self.ns)
        if existing is not None:
            modes = (existing.get("spec") or {}).get("accessModes") or []
            if "ReadWriteMany" not in modes:
                raise InvalidInputError(
                    f"PVC {self.ns}/{self.pvc['name']} exists with access modes {modes}: the "
                    "model volume must be ReadWriteMany (every Ray pod mounts it)")
            return existing
        if self.pvc.get("nfs"):
            return None
        name = self.pvc.get("storage_class")
        sc = self.client.get("storage.k8s.io/v1", "StorageClass", name) if name else None
        if name and sc is None:
            raise InvalidInputError(f"StorageClass {name} does not exist")
        if sc is not None and sc.get("provisioner") in RWO_ONLY_PROVISIONERS:
            raise InvalidInputError(
                f"StorageClass {name} ({sc['provisioner']}) provides block volumes that are "
                "not ReadWriteMany; use an NFS or file-storage class, or nfs: for a static PV")
        return None

    def volume_manifests(self) -> list:
        return volume_manifests(self.ns, self.pvc)

    def wait_bound(self, timeout: float, check_mode: bool = False, **kwargs) -> dict | None:
        """The PVC once Bound; in check mode (nothing written) the PVC as it is, or None."""
        found = {}

        def _check() -> WaitStatus:
            pvc = self.client.get("v1", "PersistentVolumeClaim", self.pvc["name"], self.ns)
            phase = ((pvc or {}).get("status") or {}).get("phase", "")
            found["pvc"] = pvc
            return WaitStatus(done=phase == "Bound", missing=() if phase == "Bound" else (
                f"PVC {self.pvc['name']} Bound (phase {phase or 'none'})",))

        status = wait_for(_check, timeout=timeout, what="the model volume",
                          check_mode=check_mode, **{"interval": 1.0, **kwargs})
        return found["pvc"] if not status.skipped else self.client.get(
            "v1", "PersistentVolumeClaim", self.pvc["name"], self.ns)

    def retain(self, pvc: dict, check_mode: bool) -> bool:
        pv = (pvc.get("spec") or {}).get("volumeName")
        policy = self.pvc.get("reclaim_policy", "Retain")
        if not pv:
            return False
        return self.client.apply({"apiVersion": "v1", "kind": "PersistentVolume",
                                  "metadata": {"name": pv},
                                  "spec": {"persistentVolumeReclaimPolicy": policy}},
                                 check_mode=check_mode, force_conflicts=True,
                                 manager_suffix="reclaim").changed

    def staged_identity(self, pvc: dict | None) -> str | None:
        notes = ((pvc or {}).get("metadata") or {}).get("annotations") or {}
        try:
            return json.loads(notes.get(ANNOTATION, "{}")).get(self.model_dir)
        except ValueError:
            return None

    def record(self, identity: str, sleep=None) -> None:
        """Add this model to the PVC's record with a precondition (resourceVersion):
        a concurrent run's write makes ours fail with 409, and we re-read and retry, so
        two models staged at once both end in the record."""
        call_with_retries(self._record_once, identity,
                          strategy=Backoff(tries=10, delay=0.2, max_delay=3.0),
                          should_retry=retry_on(ConflictError),
                          **({"sleep": sleep} if sleep else {}))

    def _record_once(self, identity: str) -> None:
        pvc = self.client.get("v1", "PersistentVolumeClaim", self.pvc["name"], self.ns) or {}
        meta = pvc.get("metadata") or {}
        try:
            staged = json.loads((meta.get("annotations") or {}).get(ANNOTATION, "{}"))
        except ValueError:
            staged = {}
        staged[self.model_dir] = identity
        wanted = {"name": self.pvc["name"], "namespace": self.ns,
                  "annotations": {ANNOTATION: json.dumps(staged, sort_keys=True)}}
        if meta.get("resourceVersion"):
            wanted["resourceVersion"] = meta["resourceVersion"]
        self.client.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": wanted}, check_mode=False, manager_suffix="staged")
