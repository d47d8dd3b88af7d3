# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Model staging on a ReadWriteMany volume: the PVC, credentials, the stager Job.

The bytes are moved by the runtime image's ``gpu-stack-stage`` (resumable, verified,
atomic, marker-based no-op). This side only prepares and runs it:

- the PVC is created or adopted and must be ReadWriteMany (a StorageClass whose
  provisioner is known to be block-only is refused before any write); an optional static
  NFS PV as in the seed; the bound PV's reclaim policy is set (Retain by default);
- credentials become a Secret mounted as files, never arguments or logs;
- the stager's options become ``STAGE_*`` environment values of a Job with a
  restricted-v2 friendly security context; the Job's last stdout line is the result;
- after success the PVC records which source is staged where (annotation), so check mode
  can say whether a transfer would happen without touching the volume.
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
    OperationFailedError,
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
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.pods import PodWatch

MOUNT = contract.MODEL_MOUNT
SECRET_MOUNT = "/var/run/secrets/gpu-stack"
MANIFEST_MOUNT = "/var/run/gpu-stack-manifest"
ANNOTATION = "gpu-stack.llmops.io/staged"
MODEL_LABEL = "gpu-stack.llmops.io/model"  # a digest of the model directory
JOB_LABEL = "gpu-stack.llmops.io/stager-job"  # on a run's Secret: the Job it serves
COMPONENT = "model-stager"
# Source options that may carry a signature (a presigned URL): sent as a Secret.
URL_KEYS = ("url", "manifest")
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


def secret_urls(source: dict) -> dict:
    """The source URLs that carry a query string or user info (a signature, a password):
    they travel as a Secret and never appear in the Job's plain environment."""
    out = {}
    for key in URL_KEYS:
        value = source.get(key)
        if isinstance(value, str) and "://" in value:
            parts = urlsplit(value)
            if parts.query or parts.username or parts.password:
                out[key] = value
    return out


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


def upload_dir(model_dir: str) -> str:
    return contract.upload_dir(f"{MOUNT}/{model_dir}")


class ModelStaging:
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
        out, spec = [], {"accessModes": ["ReadWriteMany"],
                         "resources": {"requests": {"storage": self.pvc.get("size", "100Gi")}}}
        nfs = self.pvc.get("nfs")
        if nfs:
            pv_name = f"{self.ns}-{self.pvc['name']}"
            out.append({"apiVersion": "v1", "kind": "PersistentVolume",
                        "metadata": {"name": pv_name},
                        "spec": {"capacity": {"storage": self.pvc.get("size", "100Gi")},
                                 "accessModes": ["ReadWriteMany"], "storageClassName": "",
                                 "persistentVolumeReclaimPolicy": self.pvc.get(
                                     "reclaim_policy", "Retain"),
                                 "nfs": {"server": nfs["server"], "path": nfs["path"]}}})
            spec.update(storageClassName="", volumeName=pv_name)
        elif self.pvc.get("storage_class"):
            spec["storageClassName"] = self.pvc["storage_class"]
        out.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": self.pvc["name"], "namespace": self.ns},
                    "spec": spec})
        return out

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

    # --- the Job ----------------------------------------------------------------------
    def job_name(self) -> str:
        slug = "".join(c if c.isalnum() else "-" for c in self.model_dir.lower()).strip("-")
        return f"{f'stage-{slug}'[:44].rstrip('-')}-{self.run_id}"

    def _labels(self, component: str = COMPONENT) -> dict:
        return {"app.kubernetes.io/part-of": "llmops-gpu-stack",
                "app.kubernetes.io/component": component, MODEL_LABEL: self.model_key}

    def job_manifests(self, source: dict, image: str, manifest: dict | None,
                      credentials: dict, job_options: dict) -> list:
        """This run's Secret (credentials, signed URLs), manifest ConfigMap and Job."""
        name = self.job_name()
        secret_name = f"{name}-credentials"
        hidden = secret_urls(source)
        env = [{"name": contract.STAGE_SOURCE, "value": source["type"]},
               {"name": contract.STAGE_DEST, "value": f"{MOUNT}/{self.model_dir}"},
               {"name": contract.STAGE_PROGRESS_INTERVAL,
                "value": str(job_options.get("progress_interval", 10))},
               {"name": contract.STAGE_JOBS, "value": str(job_options.get("parallel", 4))},
               {"name": contract.STAGE_LOCK_WAIT,
                "value": str(int(job_options.get("lock_wait", 3600)))}]
        if job_options.get("verify"):
            env.append({"name": contract.STAGE_VERIFY, "value": "1"})
        for key, var in contract.STAGE_SOURCE_ENV.items():
            if key in hidden:
                env.append({"name": var, "valueFrom": {"secretKeyRef": {
                    "name": secret_name, "key": f"source-{key}"}}})
            elif key in source:
                value = source[key]
                value = ",".join(value) if isinstance(value, list) else str(value)
                env.append({"name": var, "value": value})
        mounts = [{"name": "models", "mountPath": MOUNT}]
        volumes = [{"name": "models", "persistentVolumeClaim": {"claimName": self.pvc["name"]}}]
        out = []
        if credentials or hidden:
            data = {k: str(v) for k, v in (credentials or {}).items()}
            data.update({f"source-{k}": v for k, v in hidden.items()})
            out.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": secret_name, "namespace": self.ns,
                                     "labels": {**self._labels(f"{COMPONENT}-credentials"),
                                                JOB_LABEL: name}},
                        "stringData": data})
        if credentials:
            mounts.append({"name": "credentials", "mountPath": SECRET_MOUNT, "readOnly": True})
            volumes.append({"name": "credentials", "secret": {
                "secretName": secret_name,
                "items": [{"key": k, "path": k} for k in sorted(credentials)]}})
            env.append({"name": contract.STAGE_TOKEN_FILE, "value": f"{SECRET_MOUNT}/token"})
            env.append({"name": contract.STAGE_S3_CREDENTIALS_DIR, "value": SECRET_MOUNT})
        if manifest is not None:
            out.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": f"{name}-manifest", "namespace": self.ns,
                                     "labels": self._labels()},
                        "data": {"manifest.json": json.dumps(manifest, sort_keys=True)}})
            mounts.append({"name": "manifest", "mountPath": MANIFEST_MOUNT, "readOnly": True})
            volumes.append({"name": "manifest", "configMap": {"name": f"{name}-manifest"}})
            env.append({"name": contract.STAGE_MANIFEST,
                        "value": f"{MANIFEST_MOUNT}/manifest.json"})
        container = {
            "name": "stager", "image": image, "command": ["gpu-stack-stage"], "env": env,
            "volumeMounts": mounts,
            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                          "limits": {"memory": "2Gi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"}}}
        out.append({"apiVersion": "batch/v1", "kind": "Job",
                    "metadata": {"name": name, "namespace": self.ns, "labels": self._labels()},
                    "spec": {"backoffLimit": job_options.get("backoff_limit", 2),
                             "ttlSecondsAfterFinished": 86400,
                             "template": {"metadata": {"labels": {
                                 "app.kubernetes.io/component": COMPONENT}},
                                 "spec": {"restartPolicy": "Never", "containers": [container],
                                          "volumes": volumes}}}})
        return out

    def run_job(self, manifests: list, timeout: float, progress=None, **kwargs) -> dict:
        """Create this run's Job, wait for it, return the stager's result (last stdout line).

        Never touches another run's live Job. Its Secret and ConfigMap are removed when the
        Job ends, whatever the outcome (and Secrets that a killed run left are removed by the
        next run of the model once their Job is no longer running)."""
        name = self.job_name()
        self.sweep()
        try:
            for manifest in manifests:
                self.client.apply(manifest, check_mode=False)
            self._wait_job(name, timeout, progress, **kwargs)
        except BaseException:
            self.client.delete("batch/v1", "Job", name, self.ns, check_mode=False,
                               propagation="Background")  # ours: stop it (it resumes later)
            raise
        finally:
            self._remove_run_objects(name)
        logs = self.job_logs(name)
        result = _last_json(logs)
        job = self.client.get("batch/v1", "Job", name, self.ns) or {}
        failed = any(c.get("type") == "Failed" and c.get("status") == "True"
                     for c in (job.get("status") or {}).get("conditions") or [])
        if failed or result is None or result.get("failed"):
            detail = (result or {}).get("message") or logs.strip().splitlines()[-1:] or "no output"
            raise OperationFailedError(
                f"the stager Job {self.ns}/{name} failed: {detail}",
                reason=(result or {}).get("error"), log_tail=logs[-2000:])
        return result

    def _wait_job(self, name: str, timeout: float, progress, **kwargs) -> None:
        # a pod that cannot start ends the wait; reports carry the stager's progress line
        pods = PodWatch(self.client, self.ns, f"job-name={name}",
                        f"the stager Job {self.ns}/{name}", marker="progress: ")

        def _check() -> WaitStatus:
            pods.check()
            job = self.client.get("batch/v1", "Job", name, self.ns) or {}
            status = job.get("status") or {}
            if _finished(job):
                return WaitStatus(done=True, present=(name,))
            return WaitStatus(done=False, missing=(f"Job {name} finished",),
                              progress=f"Job {name}: {status.get('active', 0)} running, "
                                       f"{status.get('failed', 0)} failed")

        wait_for(_check, timeout=timeout, what=f"the stager Job {self.ns}/{name}",
                 progress=pods.reporting(progress),
                 **{"interval": 1.0, "max_interval": 5.0, **kwargs})

    def _remove_run_objects(self, name: str) -> None:
        self.client.delete("v1", "Secret", f"{name}-credentials", self.ns, check_mode=False)
        self.client.delete("v1", "ConfigMap", f"{name}-manifest", self.ns, check_mode=False)

    def sweep(self) -> list:
        """Remove this model's stager Secrets whose Job is gone or finished (a run that was
        killed before its cleanup); a live Job's Secret is left to its run."""
        removed = []
        for secret in self.client.list("v1", "Secret", self.ns, label_selector=(
                f"app.kubernetes.io/component={COMPONENT}-credentials,"
                f"{MODEL_LABEL}={self.model_key}")):
            meta = secret["metadata"]
            job = self.client.get("batch/v1", "Job", (meta.get("labels") or {}).get(
                JOB_LABEL, ""), self.ns)
            if job is None or _finished(job):
                self.client.delete("v1", "Secret", meta["name"], self.ns, check_mode=False)
                removed.append(meta["name"])
        return removed

    def job_logs(self, name: str) -> str:
        pods = self.client.list("v1", "Pod", self.ns, label_selector=f"job-name={name}")
        if not pods:
            return ""
        newest = max(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""))
        return self.client.logs(newest["metadata"]["name"], self.ns)


def _finished(job: dict) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in ((job or {}).get("status") or {}).get("conditions") or [])


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None
