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
