# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The Argo CD Application that syncs an exported overlay.

Server-side apply (``ServerSideApply=true``) as the roles write: Argo CD then owns only
the fields the tree sets, so a GPU node keeps the labels NFD and the GPU Operator put
on it, and the operators keep their status.
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)

ARGO_API = "argoproj.io/v1alpha1"
IN_CLUSTER = "https://kubernetes.default.svc"


def application(inventory: str, options: dict) -> dict:
    if not options.get("repo_url"):
        raise InvalidInputError("application.repo_url (the Git repository holding the tree) "
                                "is required")
    path = "/".join(p for p in ((options.get("path") or "").strip("/"),
                                f"overlays/{inventory}") if p)
    destination = {"namespace": options.get("destination_namespace") or "default"}
    if options.get("destination_name"):
        destination["name"] = options["destination_name"]
    else:
        destination["server"] = options.get("destination_server") or IN_CLUSTER
    # the operators' custom resources wait for their CRDs: a sync retries until OLM has
    # installed them (and, with Manual approval, someone approved the InstallPlan)
    sync = {"syncOptions": ["ServerSideApply=true", "ApplyOutOfSyncOnly=true",
                            "SkipDryRunOnMissingResource=true"],
            "retry": {"limit": 10, "backoff": {"duration": "30s", "factor": 2,
                                               "maxDuration": "10m"}}}
    if options.get("automated"):
        sync["automated"] = {"prune": bool(options.get("prune")), "selfHeal": True}
    return {"apiVersion": ARGO_API, "kind": "Application",
            "metadata": {"name": options.get("name") or f"gpu-stack-{inventory}",
                         "namespace": options.get("namespace") or "openshift-gitops"},
            "spec": {"project": options.get("project") or "default",
                     "source": {"repoURL": options["repo_url"],
                                "targetRevision": options.get("revision") or "HEAD",
                                "path": path},
                     "destination": destination, "syncPolicy": sync}}
