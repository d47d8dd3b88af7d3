"""Shared pytest setup: the lab's fixture modules are plugins.

The model stager's tests run in their own venv (.venv-stager, see tests/check.sh), which
holds neither the lab's API server (aiohttp) nor pyvmomi: a fixture module is loaded
only where its lab can run.
"""

import importlib.util

_LAB_FIXTURES = {"gpu_lab.fixtures.vsphere": "pyVmomi", "gpu_lab.fixtures.k8s": "aiohttp"}

pytest_plugins = [
    module for module, needs in _LAB_FIXTURES.items() if importlib.util.find_spec(needs)
]



def _rank(item) -> int:
    if item.get_closest_marker("serving_stack") is not None:
        return 3
    path = item.path.as_posix()
    if "/tests/unit/" in path:
        return 0
    return 1 if "/tests/integration/serving/" in path else 2


def pytest_collection_modifyitems(config, items):
    """Order: unit tests, the serving tests (their own Ray + vLLM), the other
    integration tests, and last the whole serving stack in the lab.

    Fresh-clone CI runs saw the serving tests' vLLM lose its worker process on its first
    request when they ran after the lab's Ray/vLLM pods had come and gone (cause not
    found yet). Their vLLM now runs before any lab runs Ray, and nothing runs after the
    serving stack.
    """
    items.sort(key=_rank)
