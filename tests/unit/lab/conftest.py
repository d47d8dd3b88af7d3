"""An API service without HTTP or controllers, for protocol unit tests."""

from __future__ import annotations

import pytest
from gpu_lab.apiserver.admission import Admission
from gpu_lab.apiserver.builtins import register_builtins
from gpu_lab.apiserver.crds import CrdLibrary
from gpu_lab.apiserver.resources import Registry
from gpu_lab.apiserver.service import ApiService, Context
from gpu_lab.apiserver.store import Store
from gpu_lab.cluster import register_openshift_types, seed
from gpu_lab.config import LabSettings, default_crds


@pytest.fixture(scope="session")
def crd_library(tmp_path_factory: pytest.TempPathFactory) -> CrdLibrary:
    library = CrdLibrary(default_crds(), tmp_path_factory.mktemp("crd-cache"))
    if not library.available:
        pytest.skip(f"upstream CRDs not found at {default_crds()} (set GPU_LAB_CRDS)")
    library.warm()
    return library


@pytest.fixture
def api(crd_library: CrdLibrary, tmp_path) -> ApiService:
    settings = LabSettings(home=tmp_path, workers=2)
    registry = Registry()
    register_builtins(registry, settings.kube_minor)
    register_openshift_types(registry, crd_library)
    store = Store(None)
    service = ApiService(registry, store, Admission(store, settings.apps_domain))
    seed(service, settings, crd_library)
    return service


@pytest.fixture
def ctx() -> Context:
    return Context(field_manager="tester")


@pytest.fixture
def register_crd(api: ApiService, crd_library: CrdLibrary):
    """Register an upstream CRD by name (``rayclusters.ray.io``)."""

    def _register(name: str) -> None:
        crd = crd_library.get(name)
        assert crd is not None, name
        api.create(api.rt("apiextensions.k8s.io", "customresourcedefinitions"), None, crd,
                   Context(field_manager="tester"))

    return _register
