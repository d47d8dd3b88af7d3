"""What the Open Data Hub operator (and Red Hat OpenShift AI, its Red Hat build) does with
the two objects a site creates after installing it, as far as model serving goes:

- a ``DSCInitialization`` is the platform's base: its status turns ``Ready``;
- a ``DataScienceCluster`` lists components; with ``kserve.managementState: Managed``
  the operator deploys KServe, whose CRDs (InferenceService, ServingRuntime,
  ClusterServingRuntime) the API then serves: here they are created from the upstream
  library (``../shared/crds/kserve``) and the lab's KServe controller (``kserve.py``)
  takes them up. The DataScienceCluster is ``Ready`` once a DSCInitialization exists
  (the operator refuses a DataScienceCluster without one) and its components are
  deployed; ``Removed`` leaves KServe out (an installed CRD stays, as its objects would).

Only the serving component is simulated; the status lists every component the spec
names with its managementState, and the operator's release (from the CSV's package).
"""

from __future__ import annotations

from typing import Any

from .base import Controller, condition
from .olm import ensure_crd

DSC = ("datasciencecluster.opendatahub.io", "datascienceclusters")
DSCI = ("dscinitialization.opendatahub.io", "dscinitializations")
KSERVE_CRDS = ("inferenceservices.serving.kserve.io", "servingruntimes.serving.kserve.io",
               "clusterservingruntimes.serving.kserve.io")


class DataScienceClusterController(Controller):
    name = "opendatahub-operator"
    watches = (DSC, DSCI)

    def reconcile(self) -> float | None:
        initializations = self.list(*DSCI)
        for dsci in initializations:
            status = dsci.get("status") or {}
            self.set_status(*DSCI, dsci, {
                **status, "phase": "Ready",
                "conditions": [condition("Ready", True, "Ready", "DSCInitialization is ready",
                                         status.get("conditions"))]})
        for dsc in self.list(*DSC):
            self._sync(dsc, bool(initializations))
        return None

    def _sync(self, dsc: dict[str, Any], initialized: bool) -> None:
        components = (dsc.get("spec") or {}).get("components") or {}
        managed = {name: (spec or {}).get("managementState") or "Removed"
                   for name, spec in components.items()}
        status = dsc.get("status") or {}
        if initialized and managed.get("kserve") == "Managed":
            for crd in KSERVE_CRDS:
                ensure_crd(self, crd, {"app.opendatahub.io/kserve": "true"})
        ready = initialized
        message = ("DataScienceCluster is ready" if ready else
                   "no DSCInitialization: create one before the DataScienceCluster")
        self.set_status(*DSC, dsc, {
            "phase": "Ready" if ready else "Not Ready",
            "observedGeneration": dsc["metadata"].get("generation", 1),
            "components": {name: {"managementState": state} for name, state in managed.items()},
            "conditions": [condition("Ready", ready, "Ready" if ready else "Error", message,
                                     status.get("conditions"))]})
