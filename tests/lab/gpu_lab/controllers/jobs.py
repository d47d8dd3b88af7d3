"""Jobs run pods to completion: parallelism, completions and backoffLimit, with the
status conditions (Complete/SuccessCriteriaMet, Failed/FailureTarget) clients wait on."""

from __future__ import annotations

import copy
from typing import Any

from ..apiserver import clock
from .base import Controller, condition, owned_by, owner_ref


class JobController(Controller):
    name = "job-controller"
    watches = (("batch", "jobs"), ("", "pods"))

    def reconcile(self) -> float | None:
        pods = self.list("", "pods")
        for job in self.list("batch", "jobs"):
            if not job["metadata"].get("deletionTimestamp"):
                self._sync(job, [p for p in pods if owned_by(p, job)])
        return None

    def _sync(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        spec, status = job["spec"], dict(job.get("status") or {})
        conditions = status.get("conditions") or []
        if any(c["type"] in ("Complete", "Failed") and c["status"] == "True"
               for c in conditions):
            return
        phases = [(p.get("status") or {}).get("phase") for p in pods]
        # restarts of OnFailure pods count against backoffLimit too
        restarts = sum(c.get("restartCount", 0) for p in pods
                       for c in (p.get("status") or {}).get("containerStatuses") or [])
        succeeded, failed = phases.count("Succeeded"), phases.count("Failed") + restarts
        active = [p for p, ph in zip(pods, phases, strict=True)
                  if ph not in ("Succeeded", "Failed")]
        completions = spec.get("completions", 1)
        now = clock.now()
        status.update(startTime=status.get("startTime") or now, active=len(active),
                      succeeded=succeeded, failed=failed, terminating=0,
                      uncountedTerminatedPods={},
                      ready=sum(1 for p in active if any(
                          c.get("type") == "Ready" and c.get("status") == "True"
                          for c in (p.get("status") or {}).get("conditions") or [])))
        if succeeded >= completions:
            status["completionTime"] = now
            status["conditions"] = [
                condition("SuccessCriteriaMet", True, "CompletionsReached",
                          "Reached expected number of succeeded pods", conditions),
                condition("Complete", True, "CompletionsReached",
                          "Reached expected number of succeeded pods", conditions)]
            for p in active:
                self.delete("", "pods", p["metadata"]["namespace"], p["metadata"]["name"])
        elif failed > spec.get("backoffLimit", 6):
            message = "Job has reached the specified backoff limit"
            for p in active:
                self.delete("", "pods", p["metadata"]["namespace"], p["metadata"]["name"])
            status["conditions"] = [
                condition("FailureTarget", True, "BackoffLimitExceeded", message, conditions),
                condition("Failed", True, "BackoffLimitExceeded", message, conditions)]
        elif not spec.get("suspend"):
            want = min(spec.get("parallelism", 1), completions - succeeded) - len(active)
            for _count in range(max(want, 0)):
                self._create_pod(job)
        for key in ("active", "succeeded", "failed", "ready", "terminating"):
            if not status.get(key):
                status.pop(key, None)
        self.set_status("batch", "jobs", job, status)

    def _create_pod(self, job: dict[str, Any]) -> None:
        template = copy.deepcopy(job["spec"]["template"])
        meta = template.get("metadata") or {}
        meta.pop("creationTimestamp", None)
        meta.update({"generateName": f"{job['metadata']['name']}-",
                     "namespace": job["metadata"]["namespace"],
                     "ownerReferences": [owner_ref(job)]})
        self.create("", "pods", {"metadata": meta, "spec": template["spec"]})
