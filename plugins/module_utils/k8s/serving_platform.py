# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The kserve backend's platform objects: what model serving needs from Red Hat
OpenShift AI or Open Data Hub (release 3, the ``v2`` APIs), written once for the
gpu_operators role (through the ``serving_platform_object`` filter) and the GitOps
export (``gitops/stages.py``).

- A DSCInitialization ``default-dsci`` with the platform's applications namespace. The
  operator makes one itself at its start (unless its Subscription sets
  ``DISABLE_DSC_CONFIG``); the role creates it only where the cluster has none, with the
  platform's own monitoring stack ``Removed`` (only what serving needs). The export's sets
  the applications namespace alone, the value the operator's own has, so syncing it over
  the operator's DSCInitialization changes nothing there.
- The DataScienceCluster: only ``spec.components.kserve.managementState: Managed`` (under
  server-side apply that one field is the collection's; every other component keeps the
  cluster's setting). Release 3 serves KServe in RawDeployment mode only, the mode the
  kserve backend renders for.
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)

DSCI_API = "dscinitialization.opendatahub.io/v2"
DSC_API = "datasciencecluster.opendatahub.io/v2"
DEFAULT_DSCI = "default-dsci"
DEFAULT_DSC = "default-dsc"


def dsci(applications_namespace: str, name: str = DEFAULT_DSCI, *, new: bool = True) -> dict:
    """The DSCInitialization the platform's components start from: as the role creates it
    (``new``) or as the export writes it (the applications namespace alone)."""
    if not applications_namespace:
        raise InvalidInputError("the serving platform needs its applications_namespace "
                                "(redhat-ods-applications for OpenShift AI, opendatahub "
                                "for Open Data Hub)")
    spec = {"applicationsNamespace": applications_namespace}
    if new:
        spec["monitoring"] = {"managementState": "Removed"}
    return {"apiVersion": DSCI_API, "kind": "DSCInitialization", "metadata": {"name": name},
            "spec": spec}


def dsc(name: str = DEFAULT_DSC) -> dict:
    """KServe managed in the DataScienceCluster ``name`` (the cluster's one, or the
    default name where there is none)."""
    return {"apiVersion": DSC_API, "kind": "DataScienceCluster",
            "metadata": {"name": name or DEFAULT_DSC},
            "spec": {"components": {"kserve": {"managementState": "Managed"}}}}


def exported(applications_namespace: str) -> list[dict]:
    """What the GitOps export writes, in apply order: the DSCInitialization (applications
    namespace alone) and KServe managed in ``default-dsc``."""
    return [dsci(applications_namespace, new=False), dsc()]
