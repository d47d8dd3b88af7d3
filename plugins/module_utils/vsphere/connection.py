# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""vSphere connection options, defined once (documented in doc_fragments/vsphere.py).

``vsphere_argument_spec()`` is merged into every vSphere module's argument spec;
``ConnectionParams.from_params(params)`` picks the values out of a params dict, so the
client never sees a module object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ansible.module_utils.basic import env_fallback
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)


def vsphere_argument_spec() -> dict:
    """The connection options with their environment fallbacks."""
    return {
        "hostname": {"type": "str", "fallback": (env_fallback, ["VMWARE_HOST"])},
        "port": {"type": "int", "default": 443, "fallback": (env_fallback, ["VMWARE_PORT"])},
        "username": {
            "type": "str",
            "aliases": ["user"],
            "fallback": (env_fallback, ["VMWARE_USER", "VMWARE_USERNAME"]),
        },
        "password": {
            "type": "str",
            "aliases": ["pass", "pwd"],
            "no_log": True,
            "fallback": (env_fallback, ["VMWARE_PASSWORD"]),
        },
        "validate_certs": {
            "type": "bool",
            "default": True,
            "fallback": (env_fallback, ["VMWARE_VALIDATE_CERTS"]),
        },
        "ca_path": {"type": "path", "fallback": (env_fallback, ["VMWARE_CA_PATH"])},
        "request_timeout": {"type": "int", "default": 60},
    }


@dataclass(frozen=True)
class ConnectionParams:
    """How to reach vCenter; ``password`` is kept out of ``repr``."""

    hostname: str
    username: str
    password: str = field(repr=False)
    port: int = 443
    validate_certs: bool = True
    ca_path: str | None = None
    request_timeout: int = 60

    @classmethod
    def from_params(cls, params: dict) -> ConnectionParams:
        missing = [k for k in ("hostname", "username", "password") if not params.get(k)]
        if missing:
            env = {"hostname": "VMWARE_HOST", "username": "VMWARE_USER",
                   "password": "VMWARE_PASSWORD"}
            raise InvalidInputError(
                "missing vSphere connection options: "
                + ", ".join(f"{k} (or ${env[k]})" for k in missing),
                missing=missing,
            )
        port = params.get("port") or 443
        if not 0 < int(port) < 65536:
            raise InvalidInputError(f"port must be 1-65535, got {port}")
        return cls(
            hostname=params["hostname"],
            username=params["username"],
            password=params["password"],
            port=int(port),
            validate_certs=params.get("validate_certs") is not False,
            ca_path=params.get("ca_path") or None,
            request_timeout=int(params.get("request_timeout") or 60),
        )
