# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The stager Job of one staging run: its Secret, manifest ConfigMap and Job, the wait,
the result, and the cleanup.

Each run has its own Job (and Secret, ConfigMap), named ``stage-<model>-<run id>``: a
concurrent run of the same model never deletes another's live transfer; the stager's lock
on the volume (``STAGE_LOCK_WAIT``) serialises them, and the later one finds the earlier
one's marker. Credentials and signed source URLs live in the run's Secret (files and
``secretKeyRef``), never in the Job's plain environment; the Secret and ConfigMap are
removed when the Job ends, whatever the outcome, and a later run of the model removes
those a killed run left once their Job is no longer running.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common import contract
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    OperationFailedError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.wait import (
    WaitStatus,
    wait_for,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.pods import PodWatch

MOUNT = contract.MODEL_MOUNT
SECRET_MOUNT = "/var/run/secrets/gpu-stack"
MANIFEST_MOUNT = "/var/run/gpu-stack-manifest"
MODEL_LABEL = "gpu-stack.llmops.io/model"  # a digest of the model directory
JOB_LABEL = "gpu-stack.llmops.io/stager-job"  # on a run's Secret: the Job it serves
COMPONENT = "model-stager"
# Source options that may carry a signature (a presigned URL): sent as a Secret.
URL_KEYS = ("url", "manifest")


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


class StagerJob:
    """The Job half of ``staging.ModelStaging`` (needs ``client``, ``ns``, ``pvc``,
    ``model_dir``, ``run_id`` and ``model_key``)."""

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
        if job_options.get("upload_dir"):
            env.append({"name": contract.STAGE_UPLOAD_DIR, "value": job_options["upload_dir"]})
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
