#!/usr/bin/python
# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Smoke-test an OpenAI-compatible vLLM endpoint."""

from __future__ import annotations

DOCUMENTATION = r"""
module: llm_endpoint_check
short_description: Smoke-test an OpenAI-compatible vLLM endpoint
description:
  - Runs these checks in order and stops at the first that fails, naming it, the request
    and the HTTP status with an excerpt of the body.
  - C(health) - C(GET /health) answers 200. Connection failures and HTTP 503 are retried
    for up to O(wait_timeout) seconds (a new Route or a starting server); nothing else is.
  - C(models) - C(GET /v1/models) lists O(model).
  - C(completion) - C(POST /v1/completions) generates text (C(usage.completion_tokens) above
    0 and a non-empty text).
  - C(chat) - C(POST /v1/chat/completions) returns an assistant message.
  - C(stream) - a streamed completion arrives in several chunks and ends with C([DONE]).
  - C(auth) - with O(api_key) given, every route the server documents in
    C(/openapi.json) (read with the key) and a fixed list (C(/metrics), C(/invocations),
    C(/tokenize), C(/detokenize), C(/v1/models), C(/v1/completions),
    C(/v1/chat/completions), C(/pooling), C(/score), C(/classify), ...) is sent without a
    key and with a wrong key; each must answer HTTP 401, except C(GET /health). A POST
    carries a body that is not valid JSON, so an unguarded route does nothing with it.
    Every route that answers is named in the error.
  - Uses the C(openai) client; TLS, the CA and the Host header are set on its HTTP client.
version_added: 0.1.0
author:
  - llmops.gpu_stack maintainers (@llmops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - llmops.gpu_stack.llm_endpoint
options:
  prompt:
    description: The prompt of the completion, chat and stream checks.
    type: str
    default: The capital of France is
  max_tokens:
    description: Tokens to generate in each check.
    type: int
    default: 16
attributes:
  check_mode:
    support: full
    details:
      - The checks only read (a few short generations), so they also run in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: llmops.gpu_stack.llm_load_test
"""

EXAMPLES = r"""
- name: Smoke-test the Route
  llmops.gpu_stack.llm_endpoint_check:
    base_url: https://llm-llm.apps.example.com
    api_key: "{{ vault_llm_api_key }}"
    model: llama-3-70b
    ca_path: /etc/pki/ingress-ca.crt
  register: smoke

- name: Through a router reached by address, routed by Host
  llmops.gpu_stack.llm_endpoint_check:
    base_url: https://127.0.0.1:8443
    host_header: llm-llm.apps.lab.example
    ca_path: "{{ lab_ca }}"
    model: tiny
    wait_timeout: 300
"""

RETURN = r"""
checks:
  description:
    - One entry per check run, in order, with C(name), C(ok), C(request), C(elapsed_ms) and
      C(status), plus per check C(served), C(completion_tokens), C(text), C(chunks),
      C(waited_s), C(probed) and C(paths_from) (auth) or C(skipped). On failure the failing
      check ends the list with C(error).
  returned: always
  type: list
  elements: dict
sample_completion:
  description: Text the completion check generated.
  returned: success
  type: str
chat_reply:
  description: Content of the chat check's assistant message.
  returned: success
  type: str
served_models:
  description: Model names C(/v1/models) lists.
  returned: success
  type: list
  elements: str
api_url:
  description: The OpenAI API URL used (O(base_url) with C(/v1)).
  returned: success
  type: str
  sample: https://llm-llm.apps.example.com/v1
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import GpuStackError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.endpoint import (
    HAS_OPENAI,
    OPENAI_IMPORT_ERROR,
    Endpoint,
    endpoint_argument_spec,
    smoke_test,
)


def main():
    spec = endpoint_argument_spec()
    spec.update(prompt={"type": "str", "default": "The capital of France is"},
                max_tokens={"type": "int", "default": 16, "no_log": False})
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    if not HAS_OPENAI:
        module.fail_json(msg=missing_required_lib("openai"), exception=OPENAI_IMPORT_ERROR)
    params = module.params
    try:
        endpoint = Endpoint.from_params(params)
        result = smoke_test(endpoint, params["prompt"], params["max_tokens"],
                            params["wait_timeout"])
    except GpuStackError as exc:
        kwargs = exc.fail_kwargs()
        kwargs.setdefault("checks", [])
        module.fail_json(**kwargs)
    module.exit_json(changed=False, api_url=endpoint.api_url, **result)


if __name__ == "__main__":
    main()
