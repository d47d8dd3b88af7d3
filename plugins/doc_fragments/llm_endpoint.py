# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Connection options of the OpenAI-compatible endpoint modules (serving/endpoint.py)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  base_url:
    description:
      - URL of the endpoint without the API path, for example the Route's
        V(https://llm-llm.apps.example.com). The module appends C(/v1) for the OpenAI API
        (a trailing C(/v1) given here is dropped) and reads C(/health) beside it.
    type: str
    required: true
  api_key:
    description:
      - The endpoint's API key (vLLM C(--api-key)), sent as a bearer token. Never logged.
      - Without it (or empty) no Authorization check is made and requests carry a
        placeholder key.
    type: str
  model:
    description:
      - The served model name (vLLM C(--served-model-name)).
    type: str
    required: true
  ca_path:
    description:
      - PEM file of the CA that signed the endpoint's certificate (for example the
        OpenShift ingress CA), used instead of the system trust store. Empty means not given.
    type: path
  validate_certs:
    description:
      - Verify the endpoint's TLS certificate. Keep this on; give O(ca_path) for a private CA.
    type: bool
    default: true
  host_header:
    description:
      - Connect to O(base_url) but send this C(Host) header, and use it as the TLS server
        name (SNI and certificate check). For a router reached by address, for example
        O(base_url=https://127.0.0.1:8443) with O(host_header=llm-llm.apps.example.com).
        Empty means not given.
    type: str
  timeout:
    description:
      - Seconds to wait for one HTTP request.
    type: int
    default: 60
  wait_timeout:
    description:
      - Seconds to keep retrying the first C(GET /health) while the endpoint cannot be
        reached or answers HTTP 503 (a new Route or a starting server). Other answers
        are not retried. V(0) tries once.
    type: int
    default: 120
requirements:
  - openai >= 3.54.0 (with its httpx2 HTTP library)
"""
