# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The model_stage stage: ``run(client, request) -> result``.

Decide (validate the source and the model directory, check the volume is RWX, compare
the staged identity recorded on the PVC; all before the first write), act (namespace,
volume, reclaim policy, credentials Secret, the stager Job; dry runs in check mode),
wait (PVC Bound and the Job, skipped in check mode by the one wait helper), diff
(objects before/after plus the staged identity), and a summary line that says what
really happened (``msg``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.model_dir import (
    check_model_dir,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import staging

STATES = ("staged", "volume")
VERIFY = ("stat", "digests")
_UPLOAD_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


@dataclass
class Request:
    namespace: str
    pvc: dict
    model_dir: str
    source: dict
    credentials: dict = field(default_factory=dict)
    image: str = ""
    state: str = "staged"
    verify: str = "stat"  # digests: the stager re-hashes every published file
    upload_id: str | None = None  # local source: this run's own upload directory
    parallel: int = 4
    timeout: float = 3600.0
    check_mode: bool = False
    progress: Callable | None = None
    wait_options: dict = field(default_factory=dict)  # interval, clock, sleep (tests)


def summary(model_dir: str, pvc: str, out: dict, check_mode: bool, state: str) -> str:
    """One true line: what this run did (or, in check mode, would do) to the model."""
    where = f"{model_dir} on PVC {pvc}"
    if state == "volume":
        verb = "needs a transfer" if out["transfer_expected"] else "is already staged"
        return f"{'check mode: ' if check_mode else ''}volume ready; {where} {verb}"
    if check_mode:
        verb = "would be staged" if out["transfer_expected"] else "is already staged"
        return f"check mode: {where} {verb}"
    result = out.get("result") or {}
    marker = result.get("marker") or {}
    files = f"{marker.get('file_count', '?')} files, {marker.get('total_bytes', '?')} bytes"
    if result.get("changed"):
        moved = result.get("transfer_bytes") or 0
        fetched = f", {moved} bytes fetched" if moved else ""
        return f"staged {where}: {files}{fetched} (was: {result.get('reason', 'unknown')})"
    return f"{where} already staged: {files} ({result.get('reason', 'marker matches')})"


def _validate(req: Request) -> tuple[dict, dict | None]:
    if req.state not in STATES:
        raise InvalidInputError(f"state must be one of {', '.join(STATES)}, got {req.state!r}")
    check_model_dir(req.model_dir)
    if req.verify not in VERIFY:
        raise InvalidInputError(f"verify must be one of {', '.join(VERIFY)}, got {req.verify!r}")
    if req.upload_id is not None and not _UPLOAD_ID.fullmatch(req.upload_id):
        raise InvalidInputError(f"upload_id must be 1 to 32 lowercase letters, digits or '-', "
                                f"got {req.upload_id!r}")
    if req.parallel < 1 or req.timeout <= 0:
        raise InvalidInputError("parallel must be >= 1 and timeout > 0")
    if not (req.pvc or {}).get("name"):
        raise InvalidInputError("pvc.name is required")
    nfs = req.pvc.get("nfs")
    if nfs and not (nfs.get("server") and nfs.get("path")):
        raise InvalidInputError("pvc.nfs needs server and path")
    source = staging.validate_source(req.source or {})
    local = staging.local_manifest(source["local_path"]) if source["type"] == "local" else None
    return source, local


def run(client, req: Request) -> dict:
    source, local = _validate(req)
    svc = staging.ModelStaging(client, req.namespace, req.pvc, req.model_dir)
    existing = svc.check_volume()
    identity = staging.source_identity(source, local)
    staged_before = svc.staged_identity(existing)
    # A local model checked by digests needs its files uploaded again: a damaged file can
    # only be repaired from the controller's copy (the stager moved the last upload in).
    repair = source["type"] == "local" and req.verify == "digests"
    out = {"changed": False, "transfer_expected": staged_before != identity or repair,
           "pvc": {"name": req.pvc["name"]}}
    if source["type"] == "local":
        out["upload_dir"] = staging.upload_dir(req.model_dir, req.upload_id)
    diffs = {}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": req.namespace}}
    for manifest in [ns, *svc.volume_manifests()]:
        if existing is not None and manifest["kind"] in ("PersistentVolumeClaim",
                                                         "PersistentVolume"):
            continue  # adopted as it is
        _apply(client, manifest, req.check_mode, out, diffs)
    pvc = svc.wait_bound(req.timeout, check_mode=req.check_mode, **req.wait_options)
    if pvc is not None:
        out["changed"] |= svc.retain(pvc, check_mode=req.check_mode)
        out["pvc"].update(volume=(pvc.get("spec") or {}).get("volumeName"),
                          reclaim_policy=req.pvc.get("reclaim_policy", "Retain"))
    if req.check_mode or req.state == "volume":
        out["changed"] |= (req.check_mode and out["transfer_expected"]
                           and req.state == "staged")
        return _finish(req, out, diffs, staged_before, identity)
    jobs = svc.job_manifests(source, req.image, local, req.credentials,
                             {"parallel": req.parallel, "verify": req.verify == "digests",
                              "lock_wait": req.timeout, "upload_dir": out.get("upload_dir")
                              if req.upload_id else None})
    result = svc.run_job(jobs, timeout=req.timeout, progress=req.progress, **req.wait_options)
    svc.record(identity, sleep=req.wait_options.get("sleep"))
    out.update(result=result, transfer_expected=bool(result.get("changed")))
    out["changed"] |= bool(result.get("changed"))
    return _finish(req, out, diffs, staged_before, identity)


def _apply(client, manifest: dict, check_mode: bool, out: dict, diffs: dict) -> None:
    applied = client.apply(manifest, check_mode=check_mode)
    if applied.changed:
        out["changed"] = True
        diffs[f"{manifest['kind']}/{manifest['metadata']['name']}"] = applied.diff


def _finish(req: Request, out: dict, diffs: dict, before: str | None, identity: str) -> dict:
    staged_after = identity if req.state == "staged" else before
    out["diff"] = {"before": {k: d.get("before") for k, d in diffs.items()},
                   "after": {k: d.get("after") for k, d in diffs.items()}}
    out["diff"]["before"]["staged"] = {req.model_dir: before}
    out["diff"]["after"]["staged"] = {req.model_dir: staged_after}
    out["msg"] = summary(req.model_dir, req.pvc["name"], out, req.check_mode, req.state)
    return out
