#!/usr/bin/python
# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Load-test an OpenAI-compatible vLLM endpoint; JSON report and PNG chart."""

from __future__ import annotations

DOCUMENTATION = r"""
module: llm_load_test
short_description: Load-test an OpenAI-compatible vLLM endpoint
description:
  - Sends O(requests) completion requests, O(concurrency) at a time, with the C(openai)
    client (C(AsyncOpenAI)) - as fast as the endpoint answers, or on a fixed schedule
    with O(rate) - and measures for each request the latency, the time to the
    first streamed token (TTFT, with O(stream)), the completion tokens (from the stream's
    C(usage), else the number of chunks) and the HTTP status or error.
  - Writes a JSON report (O(report_path)) with start and end times, the settings, ok and
    failed counts, p50/p95/p99 of latency and TTFT in ms, requests and output tokens per
    second, error samples and every request's record; and a PNG chart (O(chart_path),
    needs matplotlib) of latency and TTFT per request and their distribution.
  - Fails when more than O(max_error_rate) of the requests failed (after writing the
    report, so it can be read).
  - Waits for C(GET /health) first, like P(llmops.gpu_stack.llm_endpoint_check#module).
version_added: 0.1.0
author:
  - llmops.gpu_stack maintainers (@llmops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - llmops.gpu_stack.llm_endpoint
options:
  requests:
    description: Number of requests to send.
    type: int
    default: 20
  concurrency:
    description: Requests in flight at the same time.
    type: int
    default: 4
  rate:
    description:
      - Requests per second, sent on a fixed schedule (request N starts N / O(rate)
        seconds after the first) whatever the answers' speed - an open load, like real
        users, for latency below saturation. A request whose time comes while
        O(concurrency) requests are in flight waits for one to finish, so set
        O(concurrency) above O(rate) times the expected latency.
      - Unset, each of the O(concurrency) slots sends its next request as soon as the
        previous one ends (a closed loop, which finds the endpoint's capacity).
    type: float
  max_tokens:
    description: Tokens to generate per request.
    type: int
    default: 32
  prompt:
    description: The prompt of every request.
    type: str
    default: Write a short story about a GPU cluster.
  stream:
    description: Stream the responses, which is what measures the time to first token.
    type: bool
    default: true
  ignore_eos:
    description:
      - Ask vLLM to ignore the end-of-sequence token so every request generates exactly
        O(max_tokens) tokens (a vLLM extension of the OpenAI API).
    type: bool
    default: false
  report_path:
    description: File to write the JSON report to (missing directories are created).
    type: path
  chart_path:
    description: File to write the PNG chart to (missing directories are created). Needs matplotlib.
    type: path
  max_error_rate:
    description: Largest share of failed requests (0 to 1) that still passes.
    type: float
    default: 0.0
attributes:
  check_mode:
    support: full
    details:
      - In check mode no request is sent and no file is written; the options are checked.
      - C(changed) is always false - the load test changes nothing on the site; the report
        and chart it writes are artifacts, named in RV(report), RV(report_path) and
        RV(chart_path).
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - matplotlib >= 3.11.2 (only for O(chart_path))
seealso:
  - module: llmops.gpu_stack.llm_endpoint_check
"""

EXAMPLES = r"""
- name: 200 requests at concurrency 16 against the Route
  llmops.gpu_stack.llm_load_test:
    base_url: https://llm-llm.apps.example.com
    api_key: "{{ vault_llm_api_key }}"
    model: llama-3-70b
    ca_path: /etc/pki/ingress-ca.crt
    requests: 200
    concurrency: 16
    max_tokens: 128
    report_path: /var/tmp/llm-validate/load.json
    chart_path: /var/tmp/llm-validate/load.png
    max_error_rate: 0.01
  register: load

- name: Latency at a steady 5 requests per second (open load)
  llmops.gpu_stack.llm_load_test:
    base_url: https://llm-llm.apps.example.com
    api_key: "{{ vault_llm_api_key }}"
    model: llama-3-70b
    ca_path: /etc/pki/ingress-ca.crt
    requests: 300
    rate: 5
    concurrency: 32
    report_path: /var/tmp/llm-validate/steady.json

- name: Show the summary
  ansible.builtin.debug:
    msg: "{{ load.summary.line }}"
"""

RETURN = r"""
summary:
  description:
    - The report without the per-request records - C(started), C(finished),
      C(duration_s), C(settings), C(counts) (C(total), C(ok), C(failed)), C(error_rate),
      C(latency_ms) and C(ttft_ms) (C(count), C(min), C(mean), C(p50), C(p95), C(p99),
      C(max)), C(requests_per_s), C(output_tokens), C(output_tokens_per_s),
      C(error_samples) - and C(line), one readable line. Empty in check mode.
  returned: always
  type: dict
report:
  description:
    - The JSON report written (would be, in check mode). It is an artifact of the test, so
      the module reports C(changed=false) whether or not it writes files.
  returned: when O(report_path) is given
  type: str
  sample: /var/tmp/llm-validate/load.json
report_path:
  description: Where the JSON report was written (would be, in check mode).
  returned: when O(report_path) is given
  type: str
chart_path:
  description: Where the PNG chart was written (would be, in check mode).
  returned: when O(chart_path) is given
  type: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    GpuStackError,
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import (
    endpoint as endpoint_lib,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import loadtest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.endpoint import (
    Endpoint,
    endpoint_argument_spec,
    run_load,
    wait_ready,
)


def _validate(p):
    for name in ("requests", "concurrency", "max_tokens"):
        if p[name] < 1:
            raise InvalidInputError(f"{name} must be at least 1, not {p[name]}")
    if p["rate"] is not None and not p["rate"] > 0:
        raise InvalidInputError(f"rate must be above 0 requests per second, not {p['rate']}")
    if not 0 <= p["max_error_rate"] <= 1:
        raise InvalidInputError(f"max_error_rate must be between 0 and 1, not "
                                f"{p['max_error_rate']}")
    if not p["prompt"]:
        raise InvalidInputError("prompt must not be empty")
    loadtest.check_output_path(p["report_path"], "report_path")
    loadtest.check_output_path(p["chart_path"], "chart_path")


def _artifacts(paths: dict) -> dict:
    """The files are the test's artifacts, not a change of the site: ``changed`` stays
    false and the files are named (``report``: the JSON report)."""
    out = dict(paths)
    if "report_path" in paths:
        out["report"] = paths["report_path"]
    return out


def _run(module, p):
    _validate(p)
    endpoint = Endpoint.from_params(p)
    paths = {k: p[k] for k in ("report_path", "chart_path") if p[k]}
    if module.check_mode:
        return {"changed": False, "summary": {}, **_artifacts(paths),
                "msg": "check mode: no request sent, no file written"}
    with endpoint.http_client() as http:
        wait_ready(endpoint, http, p["wait_timeout"])
    records, started, finished, duration = run_load(
        endpoint, requests=p["requests"], concurrency=p["concurrency"], prompt=p["prompt"],
        max_tokens=p["max_tokens"], stream=p["stream"], ignore_eos=p["ignore_eos"],
        rate=p["rate"])
    settings = {"endpoint": endpoint.base_url, "host_header": endpoint.host_header,
                "model": endpoint.model, **{k: p[k] for k in (
                    "requests", "concurrency", "rate", "max_tokens", "prompt", "stream",
                    "ignore_eos", "max_error_rate")}}
    report = loadtest.build_report(records, settings, started, finished, duration)
    if p["report_path"]:
        loadtest.write_report(report, p["report_path"])
    if p["chart_path"]:
        loadtest.write_chart(report, p["chart_path"])
    loadtest.check_error_rate(report, p["max_error_rate"])
    return {"changed": False, "summary": loadtest.summary(report), **_artifacts(paths)}


def _missing_library(p) -> dict | None:
    """Once the options are known good (bad ones get their own error, the packages
    present or not): what a missing Python package stops, as fail_json's arguments."""
    _validate(p)
    if not endpoint_lib.HAS_OPENAI:
        return {"msg": missing_required_lib("openai"),
                "exception": endpoint_lib.OPENAI_IMPORT_ERROR}
    if p["chart_path"] and not loadtest.has_chart_support():
        return {"msg": missing_required_lib("matplotlib", reason="for chart_path")}
    return None


def main():
    spec = endpoint_argument_spec()
    spec.update(
        requests={"type": "int", "default": 20},
        concurrency={"type": "int", "default": 4},
        rate={"type": "float"},
        max_tokens={"type": "int", "default": 32, "no_log": False},
        prompt={"type": "str", "default": "Write a short story about a GPU cluster."},
        stream={"type": "bool", "default": True},
        ignore_eos={"type": "bool", "default": False},
        report_path={"type": "path"},
        chart_path={"type": "path"},
        max_error_rate={"type": "float", "default": 0.0},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    try:
        missing = _missing_library(module.params)
        if missing:
            module.fail_json(**missing)
        result = _run(module, module.params)
    except GpuStackError as exc:
        module.fail_json(**exc.fail_kwargs())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
