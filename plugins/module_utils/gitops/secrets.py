# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Secrets in an export: never a value, only what the site's secret manager provides.

- ``reference`` (default): the tree holds no Secret; the objects read Secrets that
  must exist (the overlay's README lists each, with its keys).
- ``external_secret``: an ExternalSecret (external-secrets.io) per Secret, naming a
  (Cluster)SecretStore and the remote key; the operator fills the Secret.
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)

MODES = ("reference", "external_secret")
EXTERNAL_SECRETS_API = "external-secrets.io/v1beta1"


def check(options: dict) -> dict:
    mode = options.get("mode") or "reference"
    if mode not in MODES:
        raise InvalidInputError(f"secrets.mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "external_secret" and not options.get("store"):
        raise InvalidInputError("secrets.mode external_secret needs secrets.store (the "
                                "SecretStore or ClusterSecretStore that holds the keys)")
    return {**options, "mode": mode}


def objects(refs: list[dict], options: dict) -> list[dict]:
    """The objects that stand for the Secrets ``refs`` ({namespace, name, keys})."""
    if options["mode"] != "external_secret":
        return []
    prefix = (options.get("remote_key_prefix") or "").rstrip("/")
    out = []
    for ref in refs:
        remote = f"{prefix}/{ref['namespace']}/{ref['name']}".lstrip("/")
        out.append({
            "apiVersion": EXTERNAL_SECRETS_API, "kind": "ExternalSecret",
            "metadata": {"name": ref["name"], "namespace": ref["namespace"]},
            "spec": {"refreshInterval": options.get("refresh_interval") or "1h",
                     "secretStoreRef": {"name": options["store"],
                                        "kind": options.get("store_kind") or "ClusterSecretStore"},
                     "target": {"name": ref["name"], "creationPolicy": "Owner"},
                     "data": [{"secretKey": key, "remoteRef": {"key": remote, "property": key}}
                              for key in ref["keys"]]}})
    return out


def readme(inventory: str, refs: list[dict], options: dict) -> str:
    """The overlay's README: what the site provides before Argo CD syncs."""
    lines = [f"# {inventory}: exported by llmops.gpu_stack (playbooks/export.yml)", "",
             "Rendered by the roles' own code; export again after changing the inventory.",
             "No secret value is in this tree.", ""]
    if not refs:
        return "\n".join(lines) + "\n"
    if options["mode"] == "external_secret":
        lines += [f"The Secrets below are ExternalSecrets of store `{options['store']}`: put "
                  "each key in the secret manager under the remote key shown.", ""]
    else:
        lines += ["Create these Secrets in the cluster (or let a secret manager create them) "
                  "before the first sync:", ""]
    for ref in refs:
        keys = ", ".join(f"`{k}`" for k in ref["keys"])
        lines.append(f"- `{ref['namespace']}/{ref['name']}` with keys {keys}")
    lines += ["", "For example: `oc -n <namespace> create secret generic <name> "
              "--from-literal=api-key=... --from-literal=metrics-key=...`"]
    return "\n".join(lines) + "\n"
