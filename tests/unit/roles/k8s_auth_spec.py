"""The one source of the roles' ``<role>_k8s_auth`` option, and the check that every copy matches.

Ansible's argument_specs have no include, so each role that talks to the cluster carries a
copy of the same entry. What the entry must be is computed here from the spec the modules
themselves accept (kubernetes.core's ``AUTH_ARG_SPEC``, through ``k8s_argument_spec()``),
with one description per option kept below. ``drift()`` reports any difference of a role's
copy; ``python tests/unit/roles/k8s_auth_spec.py`` rewrites the copies from this source.

Aliases (``verify_ssl``, ``ssl_ca_cert``, ...) are not carried: role argument specs do not
accept them (ansible-lint's schema), so the canonical names are the contract.
"""

from __future__ import annotations

import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
if str(ROOT / "collections") not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import (  # noqa: E402
    k8s_argument_spec,
)

ROLES = {"ocp_gpu_nodes": "ocp_gpu_nodes_k8s_auth", "gpu_operators": "gpu_operators_k8s_auth",
         "model_storage": "model_storage_k8s_auth", "ray_vllm": "ray_vllm_k8s_auth",
         "validate": "validate_k8s_auth", "serving_plan": "serving_plan_k8s_auth",
         "esxi_gpu_passthrough": "esxi_gpu_passthrough_k8s_auth"}

ENTRY_DESCRIPTION = (
    "kubernetes.core's connection options, as every module of the collection takes them; "
    "defaults to C(gpu_stack_k8s_auth) (empty means the K8S_AUTH_* environment, then "
    "~/.kube/config, then the in-cluster service account).")

DESCRIPTIONS = {
    "kubeconfig": "Path to a kubeconfig file (or its content as a dictionary).",
    "context": "The kubeconfig context to use.",
    "host": "The API server URL.",
    "api_key": "A bearer token for the API server.",
    "username": "User name for basic authentication.",
    "password": "Password for basic authentication.",
    "validate_certs": "Whether to verify the API server's TLS certificate.",
    "ca_cert": "Path to the CA bundle that signs the API server's certificate.",
    "client_cert": "Path to a client certificate for TLS client authentication.",
    "client_key": "Path to the key of O(client_cert).",
    "proxy": "URL of an HTTP proxy to the API server.",
    "no_proxy": "Comma-separated hosts to reach without the proxy.",
    "proxy_headers": "Headers sent to the proxy.",
    "proxy_basic_auth": "Proxy basic authentication, C(user:password).",
    "basic_auth": "Basic authentication, C(user:password).",
    "user_agent": "The User-Agent header.",
    "persist_config": "Write refreshed credentials back to the kubeconfig file.",
    "impersonate_user": "User to impersonate.",
    "impersonate_groups": "Groups to impersonate.",
}


# Secret whatever the installed kubernetes.core says: newer releases mark kubeconfig
# no_log too (it may be a dictionary with credentials), and the roles' contract must be
# the same on every ansible-core the collection supports.
SECRETS = frozenset({"kubeconfig", "api_key", "password", "client_key", "proxy_basic_auth",
                     "basic_auth"})


def _options(spec: dict) -> dict:
    out = {}
    for name, upstream in spec.items():
        entry = {"description": DESCRIPTIONS[name], "type": upstream.get("type", "str")}
        if "elements" in upstream:
            entry["elements"] = upstream["elements"]
        if upstream.get("no_log") or name in SECRETS:
            entry["no_log"] = True
        if "options" in upstream:
            entry["options"] = _options(upstream["options"])
        out[name] = entry
    return out


def expected_entry() -> dict:
    """The argument_specs entry every role's ``*_k8s_auth`` option must be."""
    return {"description": ENTRY_DESCRIPTION, "type": "dict", "no_log": True,
            "options": _options(k8s_argument_spec())}


def render(variable: str) -> str:
    """The entry as YAML text, indented as an option of ``argument_specs.main.options``."""
    body = yaml.safe_dump({variable: expected_entry()}, sort_keys=False, width=80,
                          default_flow_style=False)
    return "".join(f"      {line}\n" for line in body.splitlines())


def block(text: str, variable: str) -> str:
    """The text of one option's entry in an argument_specs file ("" when absent)."""
    found = re.search(rf"^      {re.escape(variable)}:\n(?:(?:        .*)?\n)*", text, re.M)
    return found.group(0) if found else ""


def drift(text: str, variable: str) -> list[str]:
    """What differs between a role's argument_specs text and the source (empty: nothing)."""
    options = (yaml.safe_load(text) or {})["argument_specs"]["main"]["options"]
    if variable not in options:
        return [f"{variable} is missing"]
    problems = []
    have, want = options[variable], expected_entry()
    for key in sorted(set(have) | set(want)):
        if key != "options" and have.get(key) != want.get(key):
            problems.append(f"{variable}.{key}: {have.get(key)!r} != {want.get(key)!r}")
    have_opts, want_opts = have.get("options") or {}, want["options"]
    for name in sorted(set(have_opts) | set(want_opts)):
        if have_opts.get(name) != want_opts.get(name):
            problems.append(f"{variable}.options.{name}: {have_opts.get(name)!r} != "
                            f"{want_opts.get(name)!r}")
    if not problems and block(text, variable) != render(variable):
        problems.append(f"{variable}: same meaning, different text (run {__file__})")
    return problems


def sync() -> None:
    for role, variable in ROLES.items():
        path = ROOT / "roles" / role / "meta" / "argument_specs.yml"
        text = path.read_text(encoding="utf-8")
        old = block(text, variable)
        if not old:
            raise SystemExit(f"{path}: no {variable} entry to replace")
        path.write_text(text.replace(old, render(variable), 1), encoding="utf-8")


if __name__ == "__main__":
    sync()
